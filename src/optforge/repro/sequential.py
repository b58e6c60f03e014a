"""Sequential reproduction: add held-out seeds until every claim is decided.

``optforge reproduce NAME --until-decided N_MAX`` runs the scale's seeds, evaluates the claims,
and while some claim is **inconclusive** (its interval straddles the threshold) runs again with
more held-out seeds — the scale's count ``n0``, then ``2 n0``, ``4 n0``, ... capped at ``N_MAX``
(the planned *looks*). Seeds already run are not run again. It stops at the first look where
every claim is held or failed, or after the look at ``N_MAX``; the record lists every look with
its seeds and undecided claims (``record["sequential"]``) and its claims are those of the last
look.

**Error control.** Each look is one more chance to stop on a lucky draw. A fixed-size run
states each verdict at a one-sided error of ``(1 - CONFIDENCE) / 2``; to keep that error for
the sequential run as a whole, the budget is split evenly over the planned looks (Bonferroni):
with ``K`` planned looks every interval is at level ``1 - (1 - CONFIDENCE) / K`` (98.75% for
four looks). The intervals are therefore wider than those of a fixed run with the same seeds,
and the record says at which level they were taken.

Example::

    from optforge.repro import get
    from optforge.repro.sequential import run_until_decided

    record = run_until_decided(get("sven"), "quick", n_max=24)
    record["sequential"]["looks"]  # [{"n_seeds": 3, ...}, {"n_seeds": 6, ...}, ...]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from optforge.repro.executors import Executor, LocalExecutor
from optforge.repro.registry import CONFIDENCE, Reproduction, Results
from optforge.repro.runner import TrialResult, run_reproduction, to_json_safe

__all__ = ["planned_looks", "run_until_decided"]


def planned_looks(n_start: int, n_max: int) -> list[int]:
    """Seed counts looked at: ``n_start``, doubled each time, the last one ``n_max``."""
    if n_start < 1:
        raise ValueError(f"--seeds must be >= 1, got {n_start}")
    if n_max < n_start:
        raise ValueError(
            f"--until-decided must be at least the starting seed count {n_start}, got {n_max}"
        )
    looks = [n_start]
    while looks[-1] < n_max:
        looks.append(min(2 * looks[-1], n_max))
    return looks


class _ReuseExecutor:
    """Runs only the trials it has not run before; remembers the last call's results."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.name = inner.name
        self.workers = getattr(inner, "workers", 1)
        self.done: dict[Any, TrialResult] = {}
        self.last: list[TrialResult] = []

    def map(
        self,
        fn: Callable[[Any], TrialResult],
        trials: Sequence[Any],
        *,
        on_done: Callable[[TrialResult], Any] | None = None,
        **hooks: Any,
    ) -> list[TrialResult]:
        new = [trial for trial in trials if trial not in self.done]
        for result in self.inner.map(fn, new, on_done=on_done, **hooks):
            self.done[result.trial] = result
        self.last = [self.done[trial] for trial in trials]
        return self.last


def run_until_decided(
    reproduction: Reproduction,
    scale: str = "quick",
    n_max: int = 20,
    *,
    n_start: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    executor: Executor | None = None,
    on_trial_done: Callable[[TrialResult], None] | None = None,
    on_look: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``reproduction`` with more held-out seeds until no claim is inconclusive.

    ``n_start`` defaults to the scale's seed count. Returns the record of the last look with
    ``record["sequential"] = {n_max, planned_looks, level, looks: [{n_seeds, seeds,
    inconclusive, wall_time_s}]}``; ``run_info.wall_time_s`` is the sum over the looks.
    ``on_look`` is called after each look with its entry.
    """
    looks = planned_looks(reproduction.seeds[scale] if n_start is None else n_start, n_max)
    level = 1.0 - (1.0 - CONFIDENCE) / len(looks)
    reuse = _ReuseExecutor(executor or LocalExecutor())
    history: list[dict[str, Any]] = []
    record: dict[str, Any] = {}
    for n_seeds in looks:
        start = time.perf_counter()
        record = run_reproduction(
            reproduction,
            scale,
            n_seeds=n_seeds,
            device=device,
            threads=threads,
            executor=reuse,
            on_trial_done=on_trial_done,
        )
        metrics: dict[str, dict[int, dict[str, Any]]] = {
            m: {} for m in reproduction.methods_at(scale)
        }
        for result in (part for r in reuse.last for part in r.split()):  # split: seed batches
            for arm, arm_metrics in result.metrics.items():
                metrics[arm][result.trial.seed] = arm_metrics
        results = Results(metrics)
        claims = [
            to_json_safe(claim.evaluate(results, scale, level=level))
            for claim in reproduction.claims_at(scale)
        ]
        record["claims"] = claims
        record["all_held"] = all(c["held"] for c in claims)
        look = {
            "n_seeds": n_seeds,
            "seeds": list(record["seeds"]),
            "inconclusive": [c["name"] for c in claims if c["verdict"] == "inconclusive"],
            "wall_time_s": time.perf_counter() - start,
        }
        history.append(look)
        if on_look is not None:
            on_look(look)
        if not look["inconclusive"]:
            break
    record["run_info"]["wall_time_s"] = sum(look["wall_time_s"] for look in history)
    record["sequential"] = {
        "n_max": n_max,
        "planned_looks": looks,
        "level": level,
        "looks": history,
    }
    return record
