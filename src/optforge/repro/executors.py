"""Executors run trials: ``local`` (one after another in this process, the default) and
``processes`` (a pool of worker processes on this machine, ``--workers N``). Another backend
(Ray) plugs in behind the same one-method interface."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar

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


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "processes": ProcessesExecutor,
}


def make_executor(name: str, workers: int | None = None) -> Executor:
    """Build the executor called ``name``; ``ValueError`` lists the known ones."""
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if workers not in (None, 1):
            raise ValueError("--workers needs --executor processes")
        return LocalExecutor()
    return EXECUTORS[name](workers)
