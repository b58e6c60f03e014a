"""Executors run trials: ``local`` (one after another in this process, the default),
``processes`` (a pool of worker processes on this machine, ``--workers N``) and ``ray`` (Ray
tasks on a local or existing Ray cluster; ``pip install 'optforge[ray]'``). All three sit behind
the same one-method interface and return the same results in trial order."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar

from optforge._core import require

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` on every trial and returns the results in trial order."""

    name: str

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]: ...


class LocalExecutor:
    """Runs trials one after another in this process (one torch thread pool, no pickling)."""

    name = "local"

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        results = []
        for trial in trials:
            result = fn(trial)
            results.append(result)
            if on_done is not None:
                on_done(result)
        return results


class ProcessesExecutor:
    """Runs trials in ``workers`` spawned processes (CUDA-safe); results come back in trial order.

    Each trial sets its own torch thread count, so ``workers × threads`` should not exceed the
    cores. Trials must be picklable and ``fn`` importable (the runner's ``run_trial`` is).
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers or max(1, (os.cpu_count() or 2) - 1)

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        results: list[Any] = [None] * len(trials)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            futures = {pool.submit(fn, trial): i for i, trial in enumerate(trials)}
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if on_done is not None:
                    on_done(result)
        return results


class RayExecutor:
    """Runs every trial as a Ray task (one CPU each); results come back in trial order.

    Joins the Ray cluster already initialised in this process, else the one named by
    ``RAY_ADDRESS``, else starts a local one with ``workers`` CPUs (default: all cores) and shuts
    it down after ``map``. Ray is imported on first use: ``ImportError`` names the ``ray`` extra.
    """

    name = "ray"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.ray = require("ray", "ray")

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        ray = self.ray
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = self.workers or os.cpu_count() or 1
            ray.init(**kwargs)
            started = True
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(fn)
            refs = [remote.remote(trial) for trial in trials]
            index = {ref: i for i, ref in enumerate(refs)}
            results: list[Any] = [None] * len(trials)
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                result = ray.get(done[0])
                results[index[done[0]]] = result
                if on_done is not None:
                    on_done(result)
            return results
        finally:
            if started:
                ray.shutdown()


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "processes": ProcessesExecutor,
    "ray": RayExecutor,
}


def make_executor(name: str, workers: int | None = None) -> Executor:
    """Build the executor called ``name``; ``ValueError`` lists the known ones, ``ImportError``
    names the extra of a backend that is not installed (Ray)."""
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if workers not in (None, 1):
            raise ValueError("--workers needs --executor processes or ray")
        return LocalExecutor()
    return EXECUTORS[name](workers)
