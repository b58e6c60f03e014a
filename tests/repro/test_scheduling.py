"""Scheduling (issue #34): one pool of trials across reproductions, longest first, the same
records as a sequential run; the process pool's mechanics (order, errors, a dying worker).

The process-pool tests share one module-scoped pool of two spawned workers, so the workers
(each importing torch and the paper modules once) start once for the whole module."""

import os

import pytest
import torch

from optforge.repro import Claim, LocalExecutor, ProcessesExecutor, Reproduction, get
from optforge.repro import registry as registry_module
from optforge.repro.executors import (
    WorkerError,
    _call_indexed,
    _ListQueue,
    make_executor,
    usable_cores,
)
from optforge.repro.job import Job, Schedule
from optforge.repro.runner import Request, Trial, run_reproduction, run_trial


@pytest.fixture(scope="module")
def pool():
    with ProcessesExecutor(workers=2) as executor:
        yield executor


def _untimed(metrics):
    """Metrics without wall-clock measurements (those differ between any two runs)."""
    return {
        method: {
            seed: {k: v for k, v in values.items() if "time" not in k and "wall" not in k}
            for seed, values in per_seed.items()
        }
        for method, per_seed in metrics.items()
    }


def test_one_pool_across_two_reproductions_gives_the_sequential_records(pool):
    # meco: one experiment per seed (all arms); elr: one trial per (method, seed), built from
    # functools.partial. Sequential reference: in this process, one trial after another.
    names = ("meco", "elr")
    sequential = {n: run_reproduction(get(n), "smoke") for n in names}
    started = []
    job = Job([Request(get(n), "smoke") for n in names], executor=pool)
    job.hooks.trial_started = lambda trial, worker: started.append(worker)
    outcomes = job.run()
    assert sorted(set(started)) == [0, 1]  # both workers took trials
    for outcome in outcomes:
        record, reference = outcome.record, sequential[outcome.request.name]
        assert outcome.error is None and record["run_info"]["executor"] == "processes"
        assert record["seeds"] == reference["seeds"]
        assert _untimed(record["metrics"]) == _untimed(reference["metrics"])  # bit-identical
        assert record["claims"] == reference["claims"]
        assert [(t["method"], t["seed"]) for t in record["trials"]] == [
            (t["method"], t["seed"]) for t in reference["trials"]
        ]


def test_pool_map_keeps_order_and_reports_errors_and_dead_workers(pool):
    assert pool.map(abs, [-3, 2, -1, 0, -5]) == [3, 2, 1, 0, 5]
    with pytest.raises(ValueError, match="invalid literal"):
        pool.map(int, ["1", "x"])
    with pytest.raises(WorkerError, match="died"):
        pool.map(os._exit, [3])
    assert pool.map(abs, [-7]) == [7]  # a fresh worker replaces the dead one
    # In a job (``run`` with ``on_error``) a dead worker fails its item only; the rest go on.
    errors, results = [], []
    jobs = [(os._exit, 0, 3), (abs, 1, -5), (abs, 2, -6), (abs, 3, -8)]
    pool.run(
        _call_indexed,
        _ListQueue(jobs),
        on_done=results.append,
        on_error=lambda job, err: errors.append((job[1], err)),
    )
    assert sorted(results) == [(1, 5), (2, 6), (3, 8)]
    assert [i for i, _ in errors] == [0] and isinstance(errors[0][1], WorkerError)


def _die_holding_a_result_lock(job):
    """Die as a worker killed in the middle of sending its result would: holding any result
    channel's write lock (a shared ``multiprocessing.Queue`` has one; a private pipe has none).
    The other jobs wait until that has happened, so their results are sent after it."""
    import gc
    import multiprocessing.queues
    import time
    from pathlib import Path

    index, value, marker = job
    if value is None:
        for obj in gc.get_objects():
            if isinstance(obj, multiprocessing.queues.Queue) and obj._wlock is not None:
                obj._wlock.acquire()
        Path(marker).touch()
        os._exit(3)
    deadline = time.monotonic() + 30
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return index, abs(value)


def test_a_worker_killed_while_sending_does_not_block_the_others(tmp_path):
    # With one shared multiprocessing.Queue, a worker killed while its feeder thread held the
    # queue's write lock left the lock held: every later result blocked and the pool hung (seen
    # once in a CI run of this module). One pipe per worker has no shared lock.
    import threading

    errors, results = [], []
    marker = str(tmp_path / "lock-taken")
    jobs = [(0, None, marker), (1, -5, marker), (2, -6, marker), (3, -8, marker)]
    with ProcessesExecutor(workers=2) as executor:

        def run():
            executor.run(
                _die_holding_a_result_lock,
                _ListQueue(jobs),
                on_done=results.append,
                on_error=lambda job, err: errors.append((job[0], err)),
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=60)
        hung = thread.is_alive()
        if hung:
            executor.close(kill=True)
    assert not hung, "the pool hung after a worker died holding a result lock"
    assert sorted(results) == [(1, 5), (2, 6), (3, 8)]
    assert [i for i, _ in errors] == [0] and isinstance(errors[0][1], WorkerError)


def _sets_global_state(config, seed, device):
    torch.set_flush_denormal(True)
    torch.set_default_dtype(torch.float64)
    return {"x": 1.0}


def _reads_global_state(config, seed, device):
    tiny = torch.tensor([1e-39], dtype=torch.float32) * 1.0
    return {
        "denormal_kept": float(tiny.item() != 0.0),
        "dtype64": float(torch.ones(1).dtype == torch.float64),
    }


def _register_toy(monkeypatch, name, methods):
    """Register a one-claim reproduction ``name`` running ``methods`` for this test only."""
    reproduction = Reproduction(
        name=name,
        title="t",
        arxiv="0",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods=methods,
        claims=[Claim("c", "s", lambda r: 1.0, ">=", 0.0)],
    )
    monkeypatch.setitem(registry_module._REGISTRY, name, reproduction)


def test_a_trial_does_not_inherit_global_torch_state_from_the_one_before(monkeypatch):
    _register_toy(
        monkeypatch, "toy-state", {"a-sets": _sets_global_state, "b-reads": _reads_global_state}
    )
    try:
        run_trial(Trial("toy-state", ("a-sets",), "smoke", 1, "cpu", 1))
        after = run_trial(Trial("toy-state", ("b-reads",), "smoke", 1, "cpu", 1))
    finally:
        torch.set_flush_denormal(False)
        torch.set_default_dtype(torch.float32)
    assert after.metrics["b-reads"] == {"denormal_kept": 1.0, "dtype64": 0.0}


def _native_pools(config, seed, device):
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {"blas_threads": float(max(blas)), "omp_env": float(os.environ["OMP_NUM_THREADS"])}


def test_a_trial_limits_numpy_blas_and_openmp_to_its_threads(monkeypatch):
    """torch.set_num_threads does not size numpy's OpenBLAS: a one-thread trial in each of two
    workers would run 2 x cores BLAS threads. Inside the trial every pool is limited; after
    it the caller's limits and environment are back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    _register_toy(monkeypatch, "toy-pools", {"m": _native_pools})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threadpool_limits(limits=3, user_api="blas"):  # the caller's pools: 3 threads
        result = run_trial(Trial("toy-pools", ("m",), "smoke", 1, "cpu", 1))
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert result.metrics["m"] == {"blas_threads": 1.0, "omp_env": 1.0}
    assert set(after) == {3}
    assert "OMP_NUM_THREADS" not in os.environ


def _trials(name, durations, arms=("m",)):
    return [Trial(name, arms, "quick", seed, "cpu", 1) for seed in range(len(durations))]


def test_longest_trial_first_by_prior_estimate():
    trials = _trials("a", [1, 5, 3]) + _trials("b", [9, 2])
    prior = dict(zip(trials, [1.0, 5.0, 3.0, 9.0, 2.0], strict=True))
    schedule = Schedule(trials, prior).only(lambda t: True, 2)
    order = [schedule.next_for(0) for _ in trials]
    assert [prior[t] for t in order] == [9.0, 5.0, 3.0, 2.0, 1.0]
    assert schedule.next_for(0) is None


def test_static_order_measures_each_kind_once_then_goes_longest_first():
    fast = _trials("fast", [0] * 3)
    slow = _trials("slow", [0] * 3, arms=("x", "y", "z"))  # an experiment: more arms first
    schedule = Schedule(fast + slow, {}).only(lambda t: True, 1)
    first, second = schedule.next_for(0), schedule.next_for(0)
    assert (first.name, second.name) == ("slow", "fast")  # one of each kind before repeats
    schedule.running[first] = (0, schedule.running[first][1] - 30.0)  # slow took 30 s
    schedule.finish(first)
    schedule.finish(second)  # fast took ~0 s
    assert schedule.next_for(0).name == "slow"  # now known to be the longest


def test_reproductions_with_process_caches_stay_on_their_worker_while_other_work_is_left():
    cached = _trials("cached", [0] * 3)
    other = _trials("other", [0] * 2)
    prior = {**dict.fromkeys(cached, 10.0), **dict.fromkeys(other, 1.0)}
    schedule = Schedule(cached + other, prior, sticky={"cached"}).only(lambda t: True, 2)
    assert schedule.next_for(0).name == "cached"  # worker 0 now holds cached's models
    assert schedule.next_for(1).name == "other"  # worker 1 leaves cached to worker 0 ...
    assert schedule.next_for(1).name == "other"
    assert schedule.next_for(1).name == "cached"  # ... until nothing else is left
    assert schedule.next_for(0).name == "cached"


def test_default_executor_is_a_pool_of_the_usable_cores():
    assert usable_cores() >= 1
    assert isinstance(make_executor(None, workers=1), LocalExecutor)
    pool = make_executor(None, workers=2)
    assert isinstance(pool, ProcessesExecutor) and pool.workers == 2
    assert make_executor("processes").workers == usable_cores()
    with pytest.raises(ValueError, match="--executor local"):
        make_executor("local", 2)


class _OrderOnly:
    """An executor that hands out every trial and runs none: records the schedule's order."""

    name, workers = "order-only", 1

    def __init__(self):
        self.order = []

    def run(self, fn, queue, *, on_start=None, on_done=None, on_error=None):
        while (trial := queue.next_for(0)) is not None:
            self.order.append(trial)

    def close(self):
        pass


def _record(name, scale, times, device="cpu"):
    """A committed-style record of ``name`` with per-trial CPU times {(method, seed): s}."""
    trials = [
        {"method": m, "arms": m.split("+"), "seed": s, "wall_time_s": 2 * t, "cpu_time_s": t}
        for (m, s), t in times.items()
    ]
    return {"name": name, "scale": scale, "run_info": {"device": device}, "trials": trials}


def test_a_fresh_clone_goes_longest_first_by_docs_records(tmp_path):
    # issue #34: with an empty store the first round went by arm count (one of each kind first);
    # the checkout's committed record (read only) gives the estimates instead
    import json
    from pathlib import Path

    from optforge.repro.store import RunStore

    record = json.loads((Path(__file__).parents[2] / "docs/records/oblr-po.json").read_text())
    times = {(t["method"], t["seed"]): t["cpu_time_s"] for t in record["trials"]}
    request = Request(get("oblr-po"), "quick")
    executor = _OrderOnly()
    Job([request], executor=executor, store=RunStore(tmp_path)).run()
    assert sorted(executor.order, key=str) == sorted(request.trials(), key=str)
    handed = [times[(t.method, t.seed)] for t in executor.order]
    assert handed == sorted(handed, reverse=True)


def test_a_fresh_store_orders_by_the_reference_records_per_trial_times(tmp_path):
    import json

    from optforge.repro.job import committed_records_dir
    from optforge.repro.store import RunStore

    rep = get("oblr-po")
    request = Request(rep, "smoke")
    trials = request.trials()
    times = {(t.method, t.seed): float(i % 7) + 0.1 * i for i, t in enumerate(trials)}
    records = tmp_path / "records"
    records.mkdir()
    (records / "oblr-po.json").write_text(json.dumps(_record("oblr-po", "smoke", times)))
    executor = _OrderOnly()
    Job([request], executor=executor, store=RunStore(tmp_path / "store"),
        reference_records=records).run()  # fmt: skip
    assert sorted(executor.order, key=str) == sorted(trials, key=str)
    handed = [times[(t.method, t.seed)] for t in executor.order]
    assert handed == sorted(handed, reverse=True)  # longest first from the first trial on
    # another scale or device than the record's, or no record: the static order
    for other in (_record("oblr-po", "quick", times), _record("oblr-po", "smoke", times, "cuda")):
        (records / "oblr-po.json").write_text(json.dumps(other))
        executor = _OrderOnly()
        Job([request], executor=executor, reference_records=records).run()
        assert [times[(t.method, t.seed)] for t in executor.order] != handed
    # the default: this checkout's committed records (read only)
    assert Job([request]).reference_records == committed_records_dir()
    assert (committed_records_dir() / "oblr-po.json").is_file()
