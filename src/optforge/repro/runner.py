"""Run a reproduction: plan its trials, run them on an executor, build the record.

A trial is the unit an executor runs: one method on one seed, or, for a reproduction declared as
one experiment with many arms, the experiment on one seed (all arms at once, so work the arms
share is done once per seed whatever the executor), or for a reproduction declared ``batched``
those arms on a group of seeds in one call (:func:`batch_trials`; :meth:`TrialResult.split` gives
the per-seed results the record is built from). :func:`run_trial` runs one in a clean state
(the trial's seed and thread count, the default dtype, no denormal flushing, grad mode on), so its
metrics do not depend on which trials ran before it in the same process: a parallel run gives the
records of a sequential one, bit for bit where the reproduction is deterministic.
:func:`run_reproduction` runs one reproduction; :class:`optforge.repro.job.Job` runs many as one
pool of trials, resumably (what ``optforge reproduce`` uses).

The record schema (one JSON object per run, never edited afterwards)::

    {
      "schema": 1, "run_id": str, "created": ISO-8601 UTC,
      "name", "title", "arxiv", "spec", "scale", "seeds": [int], "config": {...},
      "run_info": {git_revision, source_digest, optforge_version, torch_version, numpy_version,
                   packages, python, platform, device, device_name, threads, precision,
                   effective_batch_size, world_size, executor, workers, wall_time_s,
                   trial_time_s, trial_cpu_s, resumed_trials, peak_memory_mb},
      "metrics": {method: {seed (str): {metric: float | [float] | null}}},
      "trials": [{method, arms, seed, wall_time_s, cpu_time_s, peak_memory_mb,
                  batch_seeds (only for a seed run in a batched trial: the trial's seeds,
                  whose wall and CPU time are split evenly over them)}],
      "claims": [{name, statement, description, op, threshold, value, held, ...}],
      "all_held": bool
    }

Non-finite numbers are stored as ``null`` so the record stays strict JSON.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import importlib
import math
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import optforge
from optforge._core import seed_everything
from optforge.repro.executors import Executor, LocalExecutor
from optforge.repro.registry import SCALES, Claim, Reproduction, Results, get

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Trial:
    """Some arms on one seed: the unit an executor runs (picklable, looked up by name).

    ``batch`` (a reproduction with ``batched=``): the seeds run together in one call, ``seed``
    being the first; empty for a trial of one seed as planned by :func:`plan_trials`.
    """

    name: str
    arms: tuple[str, ...]
    scale: str
    seed: int
    device: str
    threads: int
    batch: tuple[int, ...] = ()

    @property
    def method(self) -> str:
        """The arms' names joined by ``+`` (one name for a per-method trial)."""
        return "+".join(self.arms)

    @property
    def label(self) -> str:
        """``name [scale] method seed N`` for progress lines (an experiment: its arm count)."""
        what = self.arms[0] if len(self.arms) == 1 else f"{len(self.arms)} arms"
        if len(self.batch) > 1:
            return f"{self.name} [{self.scale}] {what} {len(self.batch)} seeds from {self.seed}"
        return f"{self.name} [{self.scale}] {what} seed {self.seed}"


@dataclass(frozen=True)
class TrialResult:
    trial: Trial
    metrics: dict[str, dict[str, Any]]  # arm → metrics
    wall_time_s: float
    peak_memory_mb: float
    error: str | None = None  # set by run_trial_captured when the trial raised
    cpu_time_s: float = 0.0  # CPU time of the trial's process (insensitive to other load)
    by_seed: dict[int, dict[str, dict[str, Any]]] | None = None  # a batched trial's metrics
    batch_seeds: tuple[int, ...] = ()  # a per-seed part of a batched trial: the trial's seeds

    def split(self) -> list[TrialResult]:
        """The per-seed results of a batched trial (one per seed, its wall and CPU time split
        evenly, ``batch_seeds`` set), in seed order; ``[self]`` for any other result."""
        if not self.trial.batch or self.error is not None or self.by_seed is None:
            return [self]
        n = len(self.trial.batch)
        return [
            TrialResult(
                replace(self.trial, seed=seed, batch=()),
                self.by_seed[seed],
                self.wall_time_s / n,
                self.peak_memory_mb,
                cpu_time_s=self.cpu_time_s / n,
                batch_seeds=self.trial.batch,
            )
            for seed in self.trial.batch
        ]


def plan_trials(
    reproduction: Reproduction,
    scale: str,
    seeds: Sequence[int],
    device: str = "cpu",
    threads: int = 1,
) -> list[Trial]:
    """The trials of one run: one per (method, seed), or one per seed for an experiment."""
    arms = reproduction.methods_at(scale)
    if reproduction.experiment is not None:
        return [
            Trial(reproduction.name, tuple(arms), scale, seed, device, threads) for seed in seeds
        ]
    return [
        Trial(reproduction.name, (arm,), scale, seed, device, threads)
        for arm in arms
        for seed in seeds
    ]


def batch_trials(reproduction: Reproduction, trials: Sequence[Trial]) -> list[Trial]:
    """The units to run for ``trials`` (per-seed trials of :func:`plan_trials`): themselves, or
    for a reproduction with ``batched=`` one trial per arms and group of up to ``seed_batch``
    seeds (all of them when ``None``), in plan order."""
    if reproduction.batched is None:
        return list(trials)
    groups: dict[Trial, list[int]] = {}
    for trial in trials:
        groups.setdefault(replace(trial, seed=0, batch=()), []).append(trial.seed)
    units = []
    for key, seeds in groups.items():
        size = reproduction.seed_batch or len(seeds)
        for i in range(0, len(seeds), size):
            chunk = tuple(seeds[i : i + size])
            units.append(replace(key, seed=chunk[0], batch=chunk))
    return units


def run_trial(trial: Trial) -> TrialResult:
    """Run one trial in this process with the trial's seed, device and thread count.

    Process-wide torch settings a paper may change (default dtype, denormal flushing, grad mode)
    are reset first, so the result does not depend on the trials run before in this process.
    """
    reproduction = _lookup(trial.name)
    config = reproduction.configs[trial.scale]
    torch.set_num_threads(trial.threads)
    torch.set_default_dtype(torch.float32)
    torch.set_flush_denormal(False)
    torch.set_grad_enabled(True)
    seed_everything(trial.seed)
    cuda = trial.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    metrics, by_seed = {}, None
    with native_threads(trial.threads):
        if trial.batch:
            by_seed = reproduction.run_seeds(trial.arms, config, trial.batch, trial.device)
        else:
            metrics = reproduction.run_arms(trial.arms, config, trial.seed, trial.device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return TrialResult(trial, metrics, wall, peak_mb, cpu_time_s=cpu, by_seed=by_seed)


#: Environment variables that size the thread pools of native libraries loaded later (OpenMP
#: runtimes such as scikit-learn's libgomp, OpenBLAS, MKL read them when they load).
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def native_threads(threads: int) -> Iterator[None]:
    """Limit the thread pools of numpy/scipy's BLAS and of OpenMP runtimes to ``threads``.

    ``torch.set_num_threads`` sizes torch's own pool only; numpy's and scipy's OpenBLAS and
    scikit-learn's OpenMP default to one thread per core, so two workers each running a trial
    on "one thread" would spin 2 × cores threads (the extra ones busy-wait against the other
    worker). The pools of libraries already loaded are limited with ``threadpoolctl`` (restored
    on exit); those a trial loads later read the environment variables, set for the trial and
    restored afterwards.
    """
    from threadpoolctl import threadpool_limits

    saved = {key: os.environ.get(key) for key in _THREAD_ENV}
    os.environ.update(dict.fromkeys(_THREAD_ENV, str(threads)))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _lookup(name: str) -> Reproduction:
    """The reproduction called ``name``, importing only its paper module when it follows the
    naming rule (a fresh worker process then skips importing every other paper)."""
    from optforge.repro import registry

    if name not in registry._REGISTRY:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"optforge.repro.papers.{name.replace('-', '_')}")
    return registry._REGISTRY.get(name) or get(name)


def run_trial_captured(trial: Trial) -> TrialResult:
    """:func:`run_trial`, with an exception returned as ``error`` (type, message, traceback)."""
    try:
        return run_trial(trial)
    except Exception as err:
        message = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
        return TrialResult(trial, {}, 0.0, 0.0, error=f"{message}\n{traceback.format_exc()}")


def validate_request(scale: str, n_seeds: int | None, device: str) -> None:
    """Raise ``ValueError`` naming the bad option before any work starts."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if n_seeds is not None and n_seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {n_seeds}")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")


def check_extras(reproduction: Reproduction) -> None:
    """Raise ``ImportError`` naming the extra when a module the reproduction needs is missing.

    ``reproduction.modules`` lists the modules it imports; without it every module of its
    ``extras`` is required.
    """
    import importlib.util

    extra_modules = {
        "llm": ("transformers", "peft", "trl"),
        "diffusion": ("diffusers",),
        "dfo": ("cma", "nevergrad"),
    }
    needed = list(reproduction.modules) or [
        module for extra in reproduction.extras for module in extra_modules.get(extra, ())
    ]
    for module in needed:
        if importlib.util.find_spec(module) is None:
            extra = next((e for e, mods in extra_modules.items() if module in mods), "all")
            raise ImportError(
                f"reproduction {reproduction.name!r} needs {module}; install it with "
                f"`pip install 'optforge[{extra}]'`"
            )


def run_reproduction(
    reproduction: Reproduction,
    scale: str = "quick",
    *,
    n_seeds: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    executor: Executor | None = None,
    on_trial_done: Callable[[TrialResult], None] | None = None,
) -> dict[str, Any]:
    """Run every method on every seed at ``scale`` and return the run record (see module doc).

    The trials run on ``executor`` (default: one after another in this process); an exception
    in a trial propagates.
    """
    validate_request(scale, n_seeds, device)
    check_extras(reproduction)
    executor = executor or LocalExecutor()
    request = Request(reproduction, scale, n_seeds, device, threads)
    start = time.perf_counter()
    results = executor.map(run_trial, request.units(), on_done=on_trial_done)
    wall = time.perf_counter() - start
    per_seed = {part.trial: part for result in results for part in result.split()}
    ordered = [per_seed[trial] for trial in request.trials()]
    return record_from_results(request, ordered, executor.name, executor.workers, wall)


# -- many reproductions as one job ------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One reproduction to run at one scale."""

    reproduction: Reproduction
    scale: str = "quick"
    n_seeds: int | None = None
    device: str = "cpu"
    threads: int = 1

    @property
    def name(self) -> str:
        return self.reproduction.name

    @property
    def seeds(self) -> list[int]:
        return self.reproduction.seed_list(self.scale, self.n_seeds)

    def trials(self) -> list[Trial]:
        """One trial per (arms, seed): what the record lists."""
        return plan_trials(self.reproduction, self.scale, self.seeds, self.device, self.threads)

    def units(self) -> list[Trial]:
        """What an executor runs: :meth:`trials`, seeds grouped where the reproduction batches."""
        return batch_trials(self.reproduction, self.trials())


def record_from_results(
    request: Request,
    results: Sequence[TrialResult],
    executor: str,
    workers: int,
    wall: float,
    env: Mapping[str, Any] | None = None,
    resumed: int = 0,
) -> dict[str, Any]:
    """The record of ``request`` from its trial results, in plan order (``env``: the
    :func:`environment_info` the caller has already; ``resumed``: trials kept from a killed run)."""
    reproduction, scale = request.reproduction, request.scale
    metrics: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in reproduction.methods_at(scale)}
    for result in results:
        for arm, arm_metrics in result.metrics.items():
            metrics[arm][result.trial.seed] = arm_metrics
    config = reproduction.configs[scale]
    return build_record(
        name=reproduction.name,
        title=reproduction.title,
        arxiv=reproduction.arxiv,
        spec=reproduction.spec,
        scale=scale,
        seeds=request.seeds,
        config=config,
        metrics=metrics,
        claims=reproduction.claims_at(scale),
        device=request.device,
        threads=request.threads,
        precision=str(config.get("dtype", "float32")),
        effective_batch_size=config.get("batch_size"),
        executor=executor,
        wall_time_s=wall,
        peak_memory_mb=max((r.peak_memory_mb for r in results), default=0.0),
        trials=[
            {
                "method": r.trial.method,
                "arms": list(r.trial.arms),
                "seed": r.trial.seed,
                "wall_time_s": r.wall_time_s,
                "cpu_time_s": r.cpu_time_s,
                "peak_memory_mb": r.peak_memory_mb,
                **({"batch_seeds": list(r.batch_seeds)} if r.batch_seeds else {}),
            }
            for r in results
        ],
        plot={
            "x": reproduction.plot_x,
            "y": list(reproduction.plot_y),
            "logy": reproduction.plot_logy,
        },
        environment=env,
        extra_info={
            "workers": workers,
            "trial_time_s": sum(r.wall_time_s for r in results),
            "trial_cpu_s": sum(r.cpu_time_s for r in results),
            "resumed_trials": resumed,
        },
    )


def build_record(
    *,
    name: str,
    title: str,
    arxiv: str,
    spec: str,
    scale: str,
    seeds: Sequence[int],
    config: Mapping[str, Any],
    metrics: Mapping[str, Mapping[int, Mapping[str, Any]]],
    claims: Sequence[Claim],
    device: str,
    threads: int,
    precision: str,
    effective_batch_size: Any,
    executor: str,
    wall_time_s: float,
    peak_memory_mb: float,
    trials: Sequence[Mapping[str, Any]],
    plot: Mapping[str, Any],
    environment: Mapping[str, Any] | None = None,
    extra_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record (schema in the module docstring), strict JSON, with ``claims`` evaluated.

    ``metrics`` is method → seed → metric name → value; the claims are evaluated on it at
    ``scale``. Used by :func:`run_reproduction`, :class:`Job` and ``optforge bench``, so every
    record in the store has the same shape. ``environment`` is :func:`environment_info`'s result
    when the caller has it already; ``extra_info`` adds run facts (workers, resumed trials).
    """
    results = Results(metrics)
    evaluated = [claim.evaluate(results, scale) for claim in claims]
    record = {
        "schema": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "title": title,
        "arxiv": arxiv,
        "spec": spec,
        "scale": scale,
        "seeds": list(seeds),
        "config": dict(config),
        "run_info": {
            **(environment if environment is not None else environment_info(device, threads)),
            "precision": precision,
            "effective_batch_size": effective_batch_size,
            "world_size": 1,
            "executor": executor,
            "wall_time_s": wall_time_s,
            "peak_memory_mb": peak_memory_mb,
            **(extra_info or {}),
        },
        "metrics": {m: {str(s): v for s, v in per.items()} for m, per in metrics.items()},
        "trials": [dict(t) for t in trials],
        "claims": evaluated,
        "all_held": all(c["held"] for c in evaluated),
        "plot": dict(plot),
    }
    return to_json_safe(record)


_TRACKED_PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "torch",
    "transformers",
    "peft",
    "trl",
    "diffusers",
    "cma",
    "nevergrad",
)


def environment_info(device: str, threads: int) -> dict[str, Any]:
    """Versions, code identity (git revision, digest of the sources) and hardware of this run."""
    device_name = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.device(device))
    return {
        "git_revision": git_revision(),
        "source_digest": source_digest(),
        "optforge_version": optforge.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "device_name": device_name,
        "threads": threads,
    }


def git_revision() -> str | None:
    """The checkout's HEAD commit (with ``+dirty`` when the tree has changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def source_digest() -> str:
    """SHA-256 (first 16 hex digits) of every ``.py`` file of the installed ``optforge`` package.

    Pins the code a record was made with even in a tree with uncommitted changes (where
    ``git_revision`` only says ``+dirty``) or without git.
    """
    root = Path(optforge.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose numerics a reproduction may depend on."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def to_json_safe(value: Any) -> Any:
    """Recursively convert tensors/arrays to lists and non-finite floats to ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return to_json_safe(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [to_json_safe(v) for v in value]
    return value
