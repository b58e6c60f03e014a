"""Ask/tell plumbing: evaluation cache, budgets, non-finite values, x0 checks (direct_search)."""

import math

import numpy as np
import pytest
import torch

from optforge.dfo import CDSM, Budget, minimize

F64 = torch.float64


def test_cache_counts_distinct_points_and_budget_is_exact():
    calls = []

    def fn(x):
        calls.append(x.clone())
        return float((x**2).sum())

    res = minimize(fn, torch.ones(4, dtype=F64), budget=137, generator=1)
    assert res.n_evals == len(calls) == len(res.values) == 137
    assert len({c.numpy().tobytes() for c in calls}) == len(calls)
    assert res.stop_reason == "budget"
    assert res.best_curve()[-1] == res.f_best


def test_max_iters_budget():
    res = minimize(
        lambda x: float((x**2).sum()), torch.ones(2, dtype=F64), budget=Budget(10_000, max_iters=5)
    )
    assert res.n_iters == 5 and res.stop_reason == "iters"


def test_nonfinite_values_are_failed_counted_trials():
    def fn(x):
        return float("nan") if x[0] > 0.5 else float((x**2).sum())

    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = minimize(fn, torch.zeros(2, dtype=F64), budget=100, generator=0)
    assert res.n_evals == 100 and math.isfinite(res.f_best)
    with pytest.raises(ValueError, match="non-finite"):
        minimize(fn, torch.zeros(2, dtype=F64), budget=100, nonfinite="raise", generator=0)
    with pytest.raises(ValueError, match="x0 is not finite"):
        minimize(lambda x: float("inf"), torch.zeros(2, dtype=F64), budget=10)


def test_ask_tell_protocol_errors():
    opt = CDSM(torch.zeros(2, dtype=F64), budget=3)
    x = opt.ask()
    with pytest.raises(ValueError, match="2 entries"):
        opt.tell(torch.zeros(3, dtype=F64), 0.0)
    opt.tell(x, 0.0)
    while (x := opt.ask()) is not None:
        opt.tell(x, 0.0)
    assert opt.done and opt.stop_reason == "budget"
    with pytest.raises(RuntimeError, match="stopped"):
        opt.tell(torch.ones(2, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="n must be"):
        CDSM(torch.zeros(2, dtype=F64), budget=3).ask(0)


def test_x0_type_errors():
    with pytest.raises(TypeError, match="x0"):
        minimize(lambda x: 0.0, "ab", budget=5)
    with pytest.raises(TypeError, match="x0"):
        minimize(lambda x: 0.0, torch.zeros(2, dtype=torch.int64), budget=5)
    with pytest.raises(TypeError, match="x0"):
        minimize(lambda x: 0.0, np.array(["a", "b"]), budget=5)


def test_tell_does_not_rekey_the_whole_batch(monkeypatch) -> None:
    """The cache keys of a batch's points are computed once per batch (issue #34): a ``tell``
    used to recompute the key of every point of the batch (2n per evaluation with a "2n" poll),
    which cost more than the black box on the directional-dfo reproduction's P1."""
    from optforge.dfo import CDSMConfig, direct_search

    n, budget = 40, 300
    keys: list[int] = []
    original = direct_search._key

    def counting(p):
        keys.append(1)
        return original(p)

    monkeypatch.setattr(direct_search, "_key", counting)
    opt = CDSM(torch.zeros(n, dtype=F64), CDSMConfig(r0=0.5, poll="2n"), budget=budget, generator=0)
    while (x := opt.ask()) is not None:
        opt.tell(x, float(((x - 0.3) ** 2).sum()))
    assert opt.n_evals == budget
    # a few per evaluation (the told point, x0's check) and one per point of each opened batch
    assert len(keys) <= 3 * budget + 2 * n * (opt.n_iters + 2)
