"""The timing primitives of ``optforge bench`` and ``benchmarks/``: call order, warm-up,
medians, time to target."""

from __future__ import annotations

import math
import time

import pytest

from optforge.repro import timing
from optforge.repro.timing import (
    best_time,
    cost_ratio,
    iterations_to_target,
    mean_time,
    median_time,
    time_interleaved,
    time_to_target,
)


def test_interleaved_warms_up_each_step_then_alternates_rounds():
    calls: list[str] = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    medians = time_interleaved(steps, "cpu", 3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert list(medians) == ["a", "b"] and all(v >= 0 for v in medians.values())


def test_interleaved_returns_the_median_of_the_rounds(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 4.5])  # calls take 1, 3 and 0.5 seconds
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    assert time_interleaved({"x": lambda: None}, "cpu", 3, warmup=0) == {"x": 1.0}


def test_slower_step_has_the_larger_median():
    medians = time_interleaved(
        {"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, "cpu", 3, warmup=0
    )
    assert medians["slow"] > medians["fast"] and medians["slow"] >= 0.002


def test_median_mean_and_best_time():
    calls = []
    assert median_time(lambda: calls.append(1), "cpu", 4) >= 0 and len(calls) == 2 + 4
    calls.clear()
    assert mean_time(lambda: calls.append(1), 5, warmup=1) >= 0 and len(calls) == 6
    results = iter(range(3))
    best, last = best_time(lambda: next(results), 3)
    assert best >= 0 and last == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: time_interleaved({"a": lambda: None}, "cpu", 0),
        lambda: time_interleaved({"a": lambda: None}, "cpu", 1, warmup=-1),
        lambda: mean_time(lambda: None, 0),
        lambda: best_time(lambda: None, True),
    ],
)
def test_bad_counts_are_rejected(call):
    with pytest.raises((ValueError, TypeError)):
        call()


def test_time_to_target_stops_and_counts_the_iterations():
    def run(record):
        for error in (1.0, 0.1, 1e-3, 1e-7, 1e-9):
            if record(error):
                return

    hit = time_to_target(run, 1e-6)
    assert hit.reached and hit.iterations == 4 and hit.recorded == 4
    assert hit.values == [1.0, 0.1, 1e-3, 1e-7]
    assert 0 <= hit.seconds <= hit.total_seconds


def test_time_to_target_that_is_never_reached_is_inf():
    def run(record):
        for error in (1.0, 0.5, 0.4):
            record(error)

    miss = time_to_target(run, 0.1)
    assert not miss.reached and miss.recorded == 3
    assert math.isinf(miss.seconds) and math.isinf(miss.iterations)
    assert miss.total_seconds >= 0


def test_time_to_target_keeps_the_first_hit_when_the_run_goes_on():
    def run(record):
        for error in (1.0, 1e-5, 1e-6, 1e-8):
            record(error)
            time.sleep(0.001)

    hit = time_to_target(run, 1e-4)
    assert hit.iterations == 2 and hit.recorded == 4 and hit.seconds < hit.total_seconds


def test_iterations_to_target_and_cost_ratio():
    assert iterations_to_target([3.0, float("nan"), 2.0, 0.5, 0.1], 1.0) == 4
    assert math.isinf(iterations_to_target([3.0, 2.0], 1.0))
    assert math.isinf(iterations_to_target([], 1.0))
    assert cost_ratio(2.0, 4.0) == 0.5
    assert math.isnan(cost_ratio(2.0, math.inf)) and math.isnan(cost_ratio(2.0, math.nan))
    assert math.isnan(cost_ratio(2.0, 0.0))
