"""Many reproductions as one job: one pool of trials, longest first, resumable.

``optforge reproduce`` (one name, several, or ``--all``) runs a :class:`Job`: every trial of
every requested reproduction goes into one :class:`Schedule`, and a free worker takes

* first one trial of each kind (reproduction, scale, method) never measured, more arms first
  (the static order of a fresh clone),
* then the longest by estimate: the mean time of this job's finished trials of that kind, else
  the store's previous record of the reproduction, else (a fresh clone's empty store) the
  per-trial CPU times of the committed record ``docs/records/<name>.json`` of the same scale and
  device, read only (either scaled by how this job's trials compared with those records),
* but not a trial of a reproduction whose module caches work per process (``memoize``) that
  other workers already hold, while other work is left (so fixed models are trained once per
  worker that needs them, not once per worker).

Each record is written as soon as the reproduction's last trial is done, so a killed job keeps
every finished reproduction. With a store the job is **resumable**: a reproduction whose latest
record has the same code (git revision and :func:`~optforge.repro.runner.source_digest`), package
versions, device, threads, scale, seeds and config is skipped (:func:`resume_key`); the finished
trials of an unfinished one are kept in the store's scratch area under a fingerprint of the same
facts without the seeds, and reused by the next run with that fingerprint, never by a run of other
code. The records are those of a sequential run: every trial runs in a clean state
(:func:`~optforge.repro.runner.run_trial`) and is assembled in plan order.

A reproduction that runs several seeds in one call (``batched=``) is scheduled as one trial per
group of seeds (:func:`~optforge.repro.runner.batch_trials`); its result is split into the
per-seed trials the record lists, which are what is kept for resuming, so a resumed run batches
only the seeds still missing. Estimates are per seed: a trial's estimate is its seeds' times.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from optforge.repro.executors import Executor, LocalExecutor, ProcessesExecutor, usable_cores
from optforge.repro.registry import Reproduction, get, registered_by
from optforge.repro.runner import (
    Request,
    Trial,
    TrialResult,
    batch_trials,
    check_extras,
    environment_info,
    record_from_results,
    run_trial_captured,
    to_json_safe,
    validate_request,
)
from optforge.repro.store import RunStore

__all__ = ["Job", "JobHooks", "JobProgress", "Outcome", "Schedule", "resume_key"]


@dataclass
class Outcome:
    """What a job did with one request: a new record, a stored one (``skipped``), or an error."""

    request: Request
    record: dict[str, Any] | None = None
    path: Path | None = None
    skipped: bool = False
    resumed_trials: int = 0
    error: str | None = None


@dataclass(frozen=True)
class JobProgress:
    """A snapshot of a job for a progress display."""

    total: int
    done: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    workers: int
    running: list[tuple[int, Trial, float]]  # (worker, trial, seconds since it started)


def _n_seeds(trial: Trial) -> int:
    return len(trial.batch) or 1


@dataclass
class JobHooks:
    """Callbacks of a :class:`Job`, all called in the thread that runs it."""

    skipped: Callable[[Outcome], Any] | None = None
    trial_started: Callable[[Trial, int], Any] | None = None
    trial_done: Callable[[TrialResult], Any] | None = None
    finished: Callable[[Outcome], Any] | None = None


_KEY_INFO = (
    "git_revision",
    "source_digest",
    "optforge_version",
    "python",
    "packages",
    "device",
    "threads",
)


def resume_key(record: Mapping[str, Any]) -> dict[str, Any]:
    """What must be equal for a stored record to stand for a new run of the same request."""
    info = record.get("run_info", {})
    return {
        "name": record.get("name"),
        "scale": record.get("scale"),
        "seeds": record.get("seeds"),
        "config": record.get("config"),
        **{key: info.get(key) for key in _KEY_INFO},
    }


def _request_key(request: Request, env: Mapping[str, Any]) -> dict[str, Any]:
    config = to_json_safe(request.reproduction.configs[request.scale])
    return resume_key(
        {
            "name": request.name,
            "scale": request.scale,
            "seeds": request.seeds,
            "config": config,
            "run_info": env,
        }
    )


def _fingerprint(request: Request, env: Mapping[str, Any]) -> str:
    """What a trial's result depends on besides its seed: code, packages, device, config."""
    key = _request_key(request, env)
    key.pop("seeds")
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _trial_id(trial: Trial) -> str:
    arms = hashlib.sha256(trial.method.encode()).hexdigest()[:12]
    return f"seed{trial.seed}-{arms}"


def _functions(reproduction: Reproduction) -> list[Any]:
    """The reproduction's run functions, ``functools.partial`` unwrapped."""
    functions = (
        [reproduction.experiment]
        if reproduction.experiment is not None
        else list(reproduction.methods.values())  # type: ignore[union-attr]
    )
    if reproduction.batched is not None:
        functions.append(reproduction.batched)
    out = []
    for function in functions:
        while isinstance(function, functools.partial):
            function = function.func
        out.append(function)
    return out


def _portable(reproduction: Reproduction) -> bool:
    """Whether a fresh worker process finds this reproduction by name: it was registered by a
    paper module, which every process imports when it discovers the papers. Its functions may
    live anywhere (a closure, a shared module such as ``repro.altmin_experiments``): they are
    never pickled, a worker calls its own registry's copy."""
    try:
        registered = get(reproduction.name) is reproduction
    except KeyError:
        return False
    return registered and registered_by(reproduction.name).startswith("optforge.repro.papers.")


def _has_process_cache(reproduction: Reproduction) -> bool:
    """Whether its module caches work per process (``memoize``): such trials stick to workers."""
    for function in _functions(reproduction):
        name = getattr(function, "__module__", None) or ""
        module = sys.modules.get(name)
        for value in vars(module).values() if module is not None else ():
            if (
                callable(value)
                and hasattr(value, "cache_clear")
                and hasattr(value, "__wrapped__")
                and getattr(value, "__module__", None) == name  # the paper's own, not digits()
            ):
                return True
    return False


class Schedule:
    """The pending trials of a job and the rule that picks the next one for a free worker.

    A free worker takes, among the trials it may take, first the kinds (reproduction, scale,
    method) never measured (more arms first: the static order), then the longest by estimate;
    it may not take a trial of a reproduction with per-process caches that other workers already
    hold, unless nothing else is left. Estimates: the mean time of this job's finished trials of
    the same kind, else the store's previous record scaled by how this job's trials compared
    with it. Thread-safe: a display thread may call :meth:`progress`.
    """

    def __init__(
        self,
        trials: Sequence[Trial],
        prior: Mapping[Trial, float],
        sticky: Collection[str] = (),
        workers: int = 1,
    ) -> None:
        self._lock = threading.Lock()
        self._pending = list(trials)
        self._order = {t: i for i, t in enumerate(trials)}
        self.prior = dict(prior)
        self.sticky = set(sticky)
        self.workers = workers
        self.total = len(trials)
        self.done = 0
        self.failed = 0
        self.running: dict[Trial, tuple[int, float]] = {}
        self._observed: dict[tuple[str, str, str], list[float]] = {}
        self._per_arm: list[float] = []  # seconds per arm of every finished trial
        self._calibration = [0.0, 0.0]  # Σ actual, Σ prior over finished trials with a prior
        self._warm: dict[str, set[int]] = {}
        self._filter: Callable[[Trial], bool] = lambda t: True
        self.started = time.monotonic()

    def only(self, keep: Callable[[Trial], bool], workers: int) -> Schedule:
        """Hand out only the trials ``keep`` accepts, to ``workers`` workers (a run phase)."""
        with self._lock:
            self._filter, self.workers = keep, workers
        return self

    def pending(self) -> int:
        with self._lock:
            return sum(1 for t in self._pending if self._filter(t))

    def drop(self, name: str, scale: str) -> None:
        """Forget the pending trials of one reproduction (it failed)."""
        with self._lock:
            kept = [t for t in self._pending if (t.name, t.scale) != (name, scale)]
            self.total -= len(self._pending) - len(kept)
            self._pending = kept

    def next_for(self, worker: int) -> Trial | None:
        with self._lock:
            candidates = [t for t in self._pending if self._filter(t)]
            if not candidates:
                return None
            free = [t for t in candidates if not self._held_elsewhere(t, worker)] or candidates
            trial = min(free, key=self._rank)
            self._pending.remove(trial)
            self.running[trial] = (worker, time.monotonic())
            self._warm.setdefault(trial.name, set()).add(worker)
            return trial

    def finish(self, trial: Trial, failed: bool = False) -> None:
        with self._lock:
            _, start = self.running.pop(trial, (0, time.monotonic()))
            self.done += 1
            if failed:
                self.failed += 1
                return
            seconds = time.monotonic() - start
            self._observed.setdefault(_kind(trial), []).append(seconds / _n_seeds(trial))
            self._per_arm.append(seconds / len(trial.arms) / _n_seeds(trial))
            if trial in self.prior:
                self._calibration[0] += seconds
                self._calibration[1] += self.prior[trial]

    def _held_elsewhere(self, trial: Trial, worker: int) -> bool:
        warm = self._warm.get(trial.name)
        return trial.name in self.sticky and bool(warm) and worker not in warm

    def _rank(self, trial: Trial) -> tuple[Any, ...]:
        estimate = self._estimate(trial)
        if estimate is None:  # never measured: run early, one of each kind first
            busy = sum(1 for t in self.running if _kind(t) == _kind(trial))
            return (0, busy, -len(trial.arms), self._order[trial])
        return (1, 0, -estimate, self._order[trial])

    def _estimate(self, trial: Trial) -> float | None:
        observed = self._observed.get(_kind(trial))  # seconds per seed
        if observed:
            return sum(observed) / len(observed) * _n_seeds(trial)
        if trial in self.prior:
            actual, prior = self._calibration
            return self.prior[trial] * (actual / prior if prior > 0 and actual > 0 else 1.0)
        return None

    def progress(self) -> JobProgress:
        with self._lock:
            now = time.monotonic()
            return JobProgress(
                total=self.total,
                done=self.done,
                failed=self.failed,
                elapsed_s=now - self.started,
                eta_s=self._eta(now),
                workers=self.workers,
                running=sorted(
                    ((w, t, now - start) for t, (w, start) in self.running.items()),
                    key=lambda item: item[0],
                ),
            )

    def _eta(self, now: float) -> float | None:
        """Seconds left: estimated work left over the workers, at least the longest running."""
        if not self._pending and not self.running:
            return 0.0
        # A kind never measured: the mean time per arm of the finished trials, times its arms.
        per_arm = self._per_arm
        arm_time = sum(per_arm) / len(per_arm) if per_arm else None
        work, longest = 0.0, 0.0
        for trial in self._pending:
            estimate = self._estimate(trial)
            if estimate is None and arm_time is not None:
                estimate = arm_time * len(trial.arms) * _n_seeds(trial)
            if estimate is None:
                return None
            work += estimate
        for trial, (_, start) in self.running.items():
            estimate = self._estimate(trial)
            if estimate is None and arm_time is not None:
                estimate = arm_time * len(trial.arms) * _n_seeds(trial)
            if estimate is None:
                return None
            left = max(estimate - (now - start), 0.0)
            work, longest = work + left, max(longest, left)
        return max(work / max(1, self.workers), longest)


def _kind(trial: Trial) -> tuple[str, str, str]:
    return trial.name, trial.scale, trial.method


class Job:
    """Run many requests as one pool of trials, writing each record when its trials are done.

    ``executor=None`` picks by ``workers`` (default: the usable cores over ``threads``): a
    ``processes`` pool when at least two trials can run in worker processes, else this process.
    Reproductions a fresh process cannot find by name (registered outside
    ``optforge.repro.papers``) run in this process after the pool. ``store`` (optional) is where
    records go and what makes the job resumable; ``fresh=True`` ignores what it holds.
    ``reference_records``: a folder of ``<name>.json`` records read (never written) for the
    time estimates of reproductions the store has no record of; default this checkout's
    ``docs/records`` (:func:`committed_records_dir`), ``None`` for none.
    """

    def __init__(
        self,
        requests: Sequence[Request],
        *,
        executor: Executor | None = None,
        workers: int | None = None,
        store: RunStore | None = None,
        fresh: bool = False,
        hooks: JobHooks | None = None,
        reference_records: Path | Literal["committed"] | None = "committed",
    ) -> None:
        unique: dict[tuple[str, str], Request] = {}
        for request in requests:
            validate_request(request.scale, request.n_seeds, request.device)
            check_extras(request.reproduction)
            unique.setdefault((request.name, request.scale), request)
        self.requests = list(unique.values())
        self.executor = executor
        self.workers = workers
        self.store = store
        self.fresh = fresh
        self.hooks = hooks or JobHooks()
        # where the estimates of reproductions the store has no record of come from (read only)
        self.reference_records = (
            committed_records_dir() if reference_records == "committed" else reference_records
        )
        self.schedule = Schedule([], {})
        self.outcomes = [Outcome(r) for r in self.requests]
        self._reported: set[int] = set()

    def progress(self) -> JobProgress:
        return self.schedule.progress()

    def run(self) -> list[Outcome]:
        """Run the job; returns one :class:`Outcome` per request, in request order."""
        envs: dict[tuple[str, int], dict[str, Any]] = {}
        plans: dict[Trial, Outcome] = {}
        results: dict[int, dict[Trial, TrialResult]] = {}
        prior: dict[Trial, float] = {}
        pending: list[Trial] = []
        sticky, local_only = set(), set()
        for outcome in self.outcomes:
            request = outcome.request
            env = envs.setdefault(
                (request.device, request.threads),
                environment_info(request.device, request.threads),
            )
            latest = self.store.latest_record(request.name, request.scale) if self.store else None
            if latest and not self.fresh and resume_key(latest) == _request_key(request, env):
                outcome.record, outcome.path, outcome.skipped = latest, None, True
                outcome.path = self.store.path_of(latest) if self.store else None
                if self.hooks.skipped:
                    self.hooks.skipped(outcome)
                continue
            kept = self._kept_trials(request, env)
            results[id(outcome)] = dict(kept)
            todo = [t for t in request.trials() if t not in kept]
            units = batch_trials(request.reproduction, todo)
            for unit in units:
                plans[unit] = outcome
                pending.append(unit)
            outcome.resumed_trials = len(kept)
            reference = latest or self._reference_record(request)
            prior.update(_prior_times(reference, units) if reference else {})
            if _has_process_cache(request.reproduction):
                sticky.add(request.name)
            if not _portable(request.reproduction):
                local_only.add(request.name)
        self.schedule = Schedule(pending, prior, sticky)
        spans: dict[int, list[float]] = {}
        executors: dict[int, Executor] = {}

        def started(trial: Trial, worker: int) -> None:
            outcome = plans[trial]
            spans.setdefault(id(outcome), [time.perf_counter(), 0.0])
            if self.hooks.trial_started:
                self.hooks.trial_started(trial, worker)

        def done(result: TrialResult) -> None:
            outcome = plans[result.trial]
            self.schedule.finish(result.trial, failed=result.error is not None)
            spans[id(outcome)][1] = time.perf_counter()
            if result.error is not None:
                if outcome.error is None:
                    outcome.error = f"{result.trial.label}: {result.error}"
                    self.schedule.drop(result.trial.name, result.trial.scale)
            elif outcome.error is None:
                for part in result.split():  # a batched trial: one result per seed
                    results[id(outcome)][part.trial] = part
                    self._keep(outcome.request, part, envs)
            if self.hooks.trial_done:
                self.hooks.trial_done(result)
            self._maybe_finish(outcome, results, spans, executors, envs)

        def failed(trial: Trial, err: BaseException) -> None:
            done(TrialResult(trial, {}, 0.0, 0.0, error=f"{type(err).__name__}: {err}"))

        for outcome in self.outcomes:  # every trial kept from an earlier run
            if not outcome.skipped:
                self._maybe_finish(outcome, results, spans, executors, envs)
        pool = self._pool(sum(1 for t in pending if t.name not in local_only))
        phases = [(lambda t: t.name not in local_only, pool), (lambda t: True, LocalExecutor())]
        try:
            for keep, executor in phases:
                self.schedule.only(keep, executor.workers)
                for trial in pending:
                    if keep(trial) and id(plans[trial]) not in executors:
                        executors[id(plans[trial])] = executor
                if self.schedule.pending():
                    executor.run(
                        run_trial_captured,
                        self.schedule,
                        on_start=started,
                        on_done=done,
                        on_error=failed,
                    )
        finally:
            if pool is not self.executor:
                pool.close()
        return self.outcomes

    def _reference_record(self, request: Request) -> dict[str, Any] | None:
        """The committed record of ``request``'s reproduction if it was run at the same scale on
        the same kind of device (its per-trial times seed the longest-first order of a fresh
        store), else ``None``."""
        if self.reference_records is None:
            return None
        path = Path(self.reference_records) / f"{request.name}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("scale") != request.scale:
            return None
        device = (record.get("run_info") or {}).get("device", "cpu")
        if str(device).split(":")[0] != request.device.split(":")[0]:
            return None
        return record

    def _pool(self, portable_trials: int) -> Executor:
        if self.executor is not None:
            return self.executor
        threads = max((r.threads for r in self.requests), default=1)
        workers = self.workers or max(1, usable_cores() // threads)
        if workers < 2 or portable_trials < 2:
            return LocalExecutor()
        return ProcessesExecutor(min(workers, portable_trials))

    def _kept_trials(self, request: Request, env: Mapping[str, Any]) -> dict[Trial, TrialResult]:
        """Finished trials of an unfinished earlier run with the same fingerprint."""
        if self.store is None:
            return {}
        if self.fresh:
            self.store.clear_trials(request.name, request.scale)
            return {}
        fingerprint = _fingerprint(request, env)
        kept = self.store.load_trials(request.name, request.scale, fingerprint)
        out = {}
        for trial in request.trials():
            payload = kept.get(_trial_id(trial))
            if payload is None or payload.get("arms") != list(trial.arms):
                continue
            out[trial] = TrialResult(
                trial,
                payload["metrics"],
                payload["wall_time_s"],
                payload["peak_memory_mb"],
                cpu_time_s=payload.get("cpu_time_s", 0.0),
                batch_seeds=tuple(payload.get("batch_seeds", ())),
            )
        return out

    def _keep(
        self, request: Request, result: TrialResult, envs: Mapping[tuple[str, int], Any]
    ) -> None:
        """Keep a finished trial in the store's scratch area until its record is written."""
        if self.store is None:
            return
        trial = result.trial
        self.store.save_trial(
            trial.name,
            trial.scale,
            _fingerprint(request, envs[(trial.device, trial.threads)]),
            _trial_id(trial),
            {
                "arms": list(trial.arms),
                "seed": trial.seed,
                "metrics": _plain(result.metrics),
                "wall_time_s": result.wall_time_s,
                "cpu_time_s": result.cpu_time_s,
                "peak_memory_mb": result.peak_memory_mb,
                "batch_seeds": list(result.batch_seeds),
            },
        )

    def _maybe_finish(
        self,
        outcome: Outcome,
        results: Mapping[int, Mapping[Trial, TrialResult]],
        spans: Mapping[int, list[float]],
        executors: Mapping[int, Executor],
        envs: Mapping[tuple[str, int], Any],
    ) -> None:
        """Write the record once every trial of ``outcome`` is done (or report its error once
        none of its trials is running any more)."""
        request = outcome.request
        if outcome.record is not None or outcome.skipped or id(outcome) in self._reported:
            return
        if outcome.error is not None:
            busy = any(
                (t.name, t.scale) == (request.name, request.scale) for t in self.schedule.running
            )
            if not busy:
                self._reported.add(id(outcome))
                if self.hooks.finished:
                    self.hooks.finished(outcome)
            return
        got = results.get(id(outcome), {})
        trials = request.trials()
        if any(t not in got for t in trials):
            return
        span = spans.get(id(outcome), [0.0, 0.0])
        executor = executors.get(id(outcome))
        record = record_from_results(
            request,
            [got[t] for t in trials],
            executor.name if executor else "local",
            executor.workers if executor else 1,
            max(span[1] - span[0], 0.0),
            envs[(request.device, request.threads)],
            outcome.resumed_trials,
        )
        outcome.record = record
        if self.store is not None:
            outcome.path = self.store.append(record)
            self.store.clear_trials(request.name, request.scale)
        if self.hooks.finished:
            self.hooks.finished(outcome)


def committed_records_dir() -> Path | None:
    """``docs/records`` of the source checkout this package runs from (a clone with an editable
    install), or ``None`` (an installed wheel has none)."""
    path = Path(__file__).resolve().parents[3] / "docs" / "records"
    return path if path.is_dir() else None


def _prior_times(record: Mapping[str, Any], units: Sequence[Trial]) -> dict[Trial, float]:
    """Each trial's time in ``record`` (its CPU time where recorded, which other load does not
    inflate): same (method, seed), else the method's mean; a batched trial's is the sum over its
    seeds (the record's rows of a batched run hold each seed's even share)."""
    exact: dict[tuple[str, int], float] = {}
    by_method: dict[str, list[float]] = {}
    for entry in record.get("trials", []):
        try:
            seconds = float(entry.get("cpu_time_s") or entry["wall_time_s"])
            exact[(entry["method"], int(entry["seed"]))] = seconds
            by_method.setdefault(entry["method"], []).append(seconds)
        except (KeyError, TypeError, ValueError):
            continue
    out = {}
    for trial in units:
        if trial.method not in by_method:
            continue
        mean = sum(by_method[trial.method]) / len(by_method[trial.method])
        out[trial] = sum(exact.get((trial.method, s), mean) for s in trial.batch or [trial.seed])
    return out


def _plain(value: Any) -> Any:
    """Tensors and arrays as lists, NumPy scalars as Python numbers; NaN and inf kept."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
