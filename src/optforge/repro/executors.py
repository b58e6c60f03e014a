"""Executors run trials: ``local`` (in this process, the default); a later backend (Ray) plugs
in behind the same two-method interface."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}


def make_executor(name: str) -> Executor:
    """Build the executor called ``name``; ``ValueError`` lists the known ones."""
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]()
