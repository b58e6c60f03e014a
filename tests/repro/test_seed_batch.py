"""One experiment, many seeds (issue #34): a reproduction with ``batched=`` runs a group of seeds
in one call, and the record is the one of the per-seed run (one trial row per seed, the call's
time split evenly, ``batch_seeds`` set); resume and the scheduler work per seed. Also the
gradient-noise ensemble against its single-model reference."""

import numpy as np
import pytest
import torch

from optforge.repro import Claim, Reproduction, RunStore
from optforge.repro import job as job_module
from optforge.repro import registry as registry_module
from optforge.repro.job import Job, Schedule, _prior_times
from optforge.repro.papers import gradient_noise as gn
from optforge.repro.runner import Request, batch_trials, environment_info, run_reproduction

CALLS: list[tuple[str, tuple[int, ...]]] = []
INTERRUPT: dict[str, int | None] = {"seed": None}


def _one(config, seed, arm):
    """One seed's metrics from its own stream (what a batched run must reproduce)."""
    rng = np.random.default_rng([seed, len(arm), config["k"]])
    return {"score": float(rng.random()), "curve": [float(v) for v in rng.random(3)]}


def _per_seed(arm):
    def run(config, seed, device):
        CALLS.append((arm, (seed,)))
        return _one(config, seed, arm)

    return run


def _batched(config, seeds, device, arms):
    if INTERRUPT["seed"] in seeds and "late" in arms:
        raise KeyboardInterrupt  # a Ctrl-C (or a kill) in the middle of the job
    for arm in arms:
        CALLS.append((arm, tuple(seeds)))
    return {seed: {arm: _one(config, seed, arm) for arm in arms} for seed in seeds}


def _toy(name, *, batched=True, seed_batch=None, experiment=False, n_seeds=4):
    arms = ("early", "late")
    kwargs = {"methods": {arm: _per_seed(arm) for arm in arms}}
    if experiment:
        kwargs = {
            "methods": list(arms),
            "experiment": lambda config, seed, device, arms: {
                arm: _per_seed(arm)(config, seed, device) for arm in arms
            },
        }
    reproduction = Reproduction(
        name=name,
        title="t",
        arxiv="0",
        spec="none.md",
        configs={"smoke": {"k": 1}, "quick": {"k": 2}, "full": {"k": 3}},
        claims=[Claim("c", "s", lambda r: r.mean("early", "score"), ">=", 0.0)],
        seeds={"smoke": n_seeds, "quick": n_seeds, "full": n_seeds},
        batched=_batched if batched else None,
        seed_batch=seed_batch,
        **kwargs,
    )
    registry_module._REGISTRY[name] = reproduction
    return reproduction


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """Every toy registered for this test only (the runner looks trials up by name)."""
    CALLS.clear()
    INTERRUPT["seed"] = None
    registry_module.all_reproductions()  # discover the papers into the real registry first
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _rows(record):
    return [(t["method"], t["seed"]) for t in record["trials"]]


@pytest.mark.parametrize("experiment", [False, True])
@pytest.mark.parametrize("seed_batch", [None, 3])
def test_a_batched_run_gives_the_record_of_the_per_seed_run(experiment, seed_batch):
    plain = run_reproduction(_toy("toy-plain", batched=False, experiment=experiment), "smoke")
    assert all(len(seeds) == 1 for _, seeds in CALLS)
    CALLS.clear()
    batched = run_reproduction(
        _toy("toy-batched", seed_batch=seed_batch, experiment=experiment), "smoke"
    )
    groups = [(100, 101, 102, 103)] if seed_batch is None else [(100, 101, 102), (103,)]
    assert sorted(CALLS) == sorted((arm, g) for arm in ("early", "late") for g in groups)
    assert batched["metrics"] == plain["metrics"]
    assert batched["claims"] == plain["claims"]
    assert _rows(batched) == _rows(plain)  # one row per (method, seed), in plan order
    assert "batch_seeds" not in plain["trials"][0]
    for group in groups:  # the rows of one call share its time evenly and name its seeds
        rows = [t for t in batched["trials"] if tuple(t["batch_seeds"]) == group]
        assert len(rows) == len(group) * (1 if experiment else 2)
        for method in {t["method"] for t in rows}:
            same = [t for t in rows if t["method"] == method]
            assert len({t["cpu_time_s"] for t in same}) == 1
            assert len({t["wall_time_s"] for t in same}) == 1


def test_fewer_seeds_than_the_batch_run_in_one_smaller_call():
    record = run_reproduction(_toy("toy-few", seed_batch=8), "smoke", n_seeds=2)
    assert sorted(CALLS) == [("early", (100, 101)), ("late", (100, 101))]
    assert record["seeds"] == [100, 101] and len(record["trials"]) == 4


def test_units_labels_and_seed_batch_validation():
    request = Request(_toy("toy-units", seed_batch=3), "smoke")
    units = request.units()
    assert [(u.arms, u.batch) for u in units] == [
        (("early",), (100, 101, 102)),
        (("early",), (103,)),
        (("late",), (100, 101, 102)),
        (("late",), (103,)),
    ]
    assert units[0].seed == 100 and units[0].label == "toy-units [smoke] early 3 seeds from 100"
    unbatched = _toy("toy-units-plain", batched=False)
    assert batch_trials(unbatched, request.trials()) == request.trials()
    with pytest.raises(ValueError, match="seed_batch"):
        _toy("toy-bad", seed_batch=0)


def test_a_killed_batched_job_resumes_the_missing_seeds_and_writes_the_same_record(
    tmp_path, monkeypatch
):
    toy = _toy("toy-batch-resume", seed_batch=2)
    env = environment_info("cpu", 1)  # pinned: other work may edit the tree during the test
    monkeypatch.setattr(job_module, "environment_info", lambda device, threads: dict(env))
    reference = Job([Request(toy, "smoke")], reference_records=None).run()[0].record
    CALLS.clear()
    store = RunStore(tmp_path)
    INTERRUPT["seed"] = 102  # `late` on seeds (102, 103) is interrupted
    with pytest.raises(KeyboardInterrupt):
        Job([Request(toy, "smoke")], store=store, reference_records=None).run()
    finished = {(arm, s) for arm, seeds in CALLS for s in seeds}
    assert finished and ("late", 102) not in finished and ("late", 103) not in finished
    INTERRUPT["seed"] = None
    CALLS.clear()
    [outcome] = Job([Request(toy, "smoke")], store=store, reference_records=None).run()
    everything = {(arm, s) for arm in ("early", "late") for s in (100, 101, 102, 103)}
    assert {(arm, s) for arm, seeds in CALLS for s in seeds} == everything - finished
    assert ("late", (102, 103)) in CALLS  # the missing seeds ran as one batch again
    record = outcome.record
    assert record["metrics"] == reference["metrics"] and record["claims"] == reference["claims"]
    assert _rows(record) == _rows(reference)
    assert record["run_info"]["resumed_trials"] == len(finished)
    assert all(t["batch_seeds"] for t in record["trials"])  # kept rows stay marked


def test_the_schedule_estimates_batches_per_seed():
    toy = _toy("toy-schedule", seed_batch=3)
    units = Request(toy, "smoke").units()  # early ×3, early ×1, late ×3, late ×1
    # A record of a batched run: each row holds its seed's even share of the call's time.
    record = {
        "trials": [
            {"method": m, "seed": s, "cpu_time_s": share, "wall_time_s": 9.0, "batch_seeds": []}
            for m, share in (("early", 1.0), ("late", 4.0))
            for s in (100, 101, 102, 103)
        ]
    }
    prior = _prior_times(record, units)
    assert [prior[u] for u in units] == [3.0, 1.0, 12.0, 4.0]  # the sum over a unit's seeds
    schedule = Schedule(units, prior).only(lambda t: True, 1)
    order = [schedule.next_for(0) for _ in units]
    assert [prior[u] for u in order] == [12.0, 4.0, 3.0, 1.0]  # longest first
    # Measured: a batch of 3 seeds that took 6 s makes a 1-seed batch of its kind 2 s.
    fresh = Schedule(units, {}).only(lambda t: True, 1)
    first = fresh.next_for(0)
    assert first.batch == (100, 101, 102)
    fresh.running[first] = (0, fresh.running[first][1] - 6.0)
    fresh.finish(first)
    small = next(u for u in units if u.method == first.method and len(u.batch) == 1)
    assert fresh._estimate(small) == pytest.approx(2.0, rel=0.05)


def test_gradient_noise_is_declared_batched_with_every_seed_in_one_call():
    reproduction = registry_module.get("gradient-noise")
    assert reproduction.batched is not None and reproduction.seed_batch is None
    units = Request(reproduction, "quick").units()
    assert len(units) == 5 and all(len(u.batch) == 10 for u in units)


@pytest.mark.parametrize("arm", ["sgd+noise", "sgd", "adam+noise", "adam", "sgd(kaiming)"])
def test_gradient_noise_ensemble_follows_each_seeds_single_model(arm):
    """Each seed of the ensemble is the single-model run: same init, batches, clipping, noise
    draw and step (bit-identical on this machine's CPU; compared to float rounding here)."""
    torch.set_num_threads(1)
    config = {
        **gn.CONFIGS["quick"],
        "depth": 3,
        "steps": 40,
        "adam_steps": 40,
        "kaiming_steps": 40,
        "eval_every": 10,
        "mid_step": 20,
    }
    seeds = (100, 101)
    try:
        ensemble = gn.train_ensemble(config, seeds, "cpu", **gn._ARMS[arm])
        single = {seed: gn.METHODS[arm](config, seed, "cpu") for seed in seeds}
    finally:
        torch.set_flush_denormal(False)
    for seed in seeds:
        got, want = ensemble[seed], single[seed]
        assert got.keys() == want.keys() and got["step"] == want["step"]
        for key in ("train_loss", "train_acc"):
            torch.testing.assert_close(
                torch.tensor(got[key]), torch.tensor(want[key]), rtol=1e-5, atol=1e-6
            )
        assert got["test_acc"] == pytest.approx(want["test_acc"], abs=1e-6)
    # The seeds are not the same run (the streams are per seed).
    assert ensemble[100]["train_loss"] != ensemble[101]["train_loss"]


def test_sequential_looks_read_the_per_seed_results_of_batched_trials():
    from optforge.repro.sequential import run_until_decided

    plain = run_until_decided(_toy("toy-seq-plain", batched=False), "smoke", n_max=8, n_start=2)
    batched = run_until_decided(_toy("toy-seq-batched"), "smoke", n_max=8, n_start=2)
    assert batched["metrics"] == plain["metrics"] and batched["claims"] == plain["claims"]
    assert batched["sequential"]["looks"][-1]["seeds"] == plain["sequential"]["looks"][-1]["seeds"]
