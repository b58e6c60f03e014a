"""Timing for benchmarks: interleaved medians, back-to-back means, best of runs, time to target.

Every cost optforge reports is a *ratio* against a baseline measured in the same process run, so
a timing has to be comparable between arms more than exact. The rules used everywhere
(``optforge bench`` and the ``benchmarks/*.py`` scripts):

* **Interleaved rounds** (:func:`time_interleaved`): every callable is first warmed up
  (``warmup`` calls each: allocator, lazy optimizer state, ``torch.func`` tracing); then each of
  ``repeats`` rounds calls every callable once, in turn. The result is the median seconds per
  call. Drift of the machine (other jobs, clock scaling) hits every arm alike and cancels out of
  the ratios; the median drops the outliers.
* **Device sync**: on a CUDA device :func:`sync` (``torch.cuda.synchronize``) follows the
  warm-up and every timed call, so the kernels a call queued are inside its time.
* **Time to target** (:func:`time_to_target`): the wall time and the number of iterations until
  a metric recorded along a run (an error, a loss) first drops to ``target`` or below;
  :func:`iterations_to_target` counts the iterations of a recorded sequence (e.g. objective
  evaluations of a black-box optimizer).
* Stateful runs that cannot be interleaved use :func:`mean_time` (``calls`` back-to-back calls,
  one clock read around all of them) or :func:`best_time` (the fastest of ``repeats`` whole runs).
* :func:`cost_ratio` divides a cost by its baseline's, NaN when the baseline has no finite cost
  (it never reached its target).

Example::

    from optforge.repro.timing import time_interleaved, time_to_target

    medians = time_interleaved({"adam": adam_step, "ours": our_step}, "cpu", repeats=20)
    ratio = medians["ours"] / medians["adam"]

    hit = time_to_target(
        lambda record: solve(callback=lambda it, x: record(error(x))),  # True stops the solver
        target=1e-6,
    )
    hit.seconds, hit.iterations  # math.inf when the target was never reached
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from optforge._core import check_nonnegative_int, check_positive_int

__all__ = [
    "TargetResult",
    "best_time",
    "cost_ratio",
    "iterations_to_target",
    "mean_time",
    "median_time",
    "sync",
    "time_interleaved",
    "time_to_target",
]


def sync(device: str) -> None:
    """Wait for the queued work of ``device`` (``torch.cuda.synchronize`` on CUDA; no-op else)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(
    steps: Mapping[str, Callable[[], Any]],
    device: str = "cpu",
    repeats: int = 20,
    *,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds per call of every step, timed in interleaved rounds (drift cancels).

    Args:
        steps: name → callable with no argument (one training step, one forward/backward, ...).
        device: the device the steps run on (CUDA is synchronised after each timed call).
        repeats: number of rounds; each round calls every step once, in ``steps`` order.
        warmup: untimed calls of each step before the first round (all of one step, then the
            next).

    Returns:
        name → median seconds of one call, in ``steps`` order.
    """
    check_positive_int("repeats", repeats)
    check_nonnegative_int("warmup", warmup)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def median_time(
    fn: Callable[[], Any], device: str = "cpu", repeats: int = 20, *, warmup: int = 2
) -> float:
    """Median seconds per call of one callable (:func:`time_interleaved` with a single step)."""
    return time_interleaved({"fn": fn}, device, repeats, warmup=warmup)["fn"]


def mean_time(fn: Callable[[], Any], calls: int, device: str = "cpu", *, warmup: int = 0) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls (one clock read around them all).

    For stateful sequences (an optimizer's successive steps) whose calls are too short, or too
    dependent on each other, to be timed one by one.
    """
    check_positive_int("calls", calls)
    check_nonnegative_int("warmup", warmup)
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def best_time(fn: Callable[[], Any], repeats: int, device: str = "cpu") -> tuple[float, Any]:
    """The fastest wall time (seconds) of ``repeats`` whole runs of ``fn``, and the last run's
    return value (for the iteration counts a run reports)."""
    check_positive_int("repeats", repeats)
    best, result = math.inf, None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


@dataclass
class TargetResult:
    """What :func:`time_to_target` measured.

    Attributes:
        target: the threshold.
        seconds: wall time from the start of the run to the first recorded value ``<= target``
            (``math.inf`` if none).
        iterations: 1-based index of that value (``math.inf`` if none).
        total_seconds: wall time of the whole run.
        values: every recorded value, in order.
    """

    target: float
    seconds: float = math.inf
    iterations: float = math.inf
    total_seconds: float = math.nan
    values: list[float] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Whether some recorded value was ``<= target``."""
        return math.isfinite(self.iterations)

    @property
    def recorded(self) -> int:
        """How many values the run recorded (its iterations, reached or not)."""
        return len(self.values)


def time_to_target(
    run: Callable[[Callable[[float], bool]], Any], target: float, device: str = "cpu"
) -> TargetResult:
    """Wall time and iterations until a metric recorded along ``run`` drops to ``target``.

    ``run(record)`` does the work and calls ``record(value)`` once per iteration with the metric
    (e.g. the relative error after a sweep); ``record`` returns ``True`` once ``value <= target``,
    so it can serve directly as a stopping callback. The clock starts just before ``run`` (after
    a device sync); the hit time is read (after a sync) when the first value ``<= target`` is
    recorded, so work the run does afterwards is not counted.
    """
    result = TargetResult(target=target)

    def record(value: float) -> bool:
        value = float(value)
        result.values.append(value)
        hit = value <= target
        if hit and not result.reached:
            sync(device)
            result.seconds = time.perf_counter() - start
            result.iterations = float(len(result.values))
        return hit

    sync(device)
    start = time.perf_counter()
    run(record)
    sync(device)
    result.total_seconds = time.perf_counter() - start
    return result


def iterations_to_target(values: Iterable[float], target: float) -> float:
    """1-based index of the first of ``values`` that is ``<= target``; ``math.inf`` if none.

    The index at which the best value so far first reaches the target, e.g. the number of
    objective evaluations a black-box optimizer needed.
    """
    for i, value in enumerate(values, 1):
        if value <= target:
            return float(i)
    return math.inf


def cost_ratio(value: float, baseline: float) -> float:
    """``value / baseline``; NaN when the baseline is not a positive finite cost (it never
    reached its target, or is missing)."""
    if not math.isfinite(baseline) or baseline <= 0:
        return math.nan
    return value / baseline
