"""PruningSchedule and CostModel: the paper's cost numbers, exact costs, survivor rounding, budgets
and bad schedules."""

from __future__ import annotations

import pytest
from _ttsnap_helpers import MULTI, SINGLE, _ddim, _inter, _reward

from optforge.diffusion.ttsnap import CostModel, PruningSchedule, ttsnap_search


def test_reference_cost_reproduces_paper_numbers():
    ref = CostModel(9.9, 1.2, "reference")
    assert ref.per_candidate(SINGLE, 20) == pytest.approx(51.864)
    assert ref.per_candidate(MULTI, 20) == pytest.approx(68.988)
    assert ref.per_candidate(None, 20) == pytest.approx(20 * 9.9 + 1.2)  # 199.2
    # B = 2000: best-of-N sees 10 seeds, TTSnap 38 (single) / 28 (multi), as in the spec.
    assert ref.num_candidates(2000, None, 20) == 10
    assert ref.num_candidates(2000, SINGLE, 20) == 38
    assert ref.num_candidates(2000, MULTI, 20) == 28


def test_exact_cost_closed_forms():
    x, y = 2.0, 0.5
    exact = CostModel(x, y)
    assert exact.per_candidate(None, 20) == pytest.approx(20 * x + y)
    ones = PruningSchedule((2, 6, 11), (1.0, 1.0, 1.0))
    assert exact.per_candidate(ones, 20) == pytest.approx(20 * x + 4 * y)
    assert exact.search_cost(7, ones, 20) == pytest.approx(7 * (20 * x + 4 * y))
    # The reference is one step short per seed: exact - reference == x (all keep = 1).
    ref = CostModel(x, y, "reference")
    assert exact.per_candidate(ones, 20) - ref.per_candidate(ones, 20) == pytest.approx(x)
    # Expected exact cost for the default schedule: the reference plus one step per seed.
    assert exact.per_candidate(SINGLE, 20) == pytest.approx(ref.per_candidate(SINGLE, 20) + x)


def test_search_cost_hand_counted():
    # n = 10, S = 5, checkpoints at 0 and 2 keeping 0.5 and 0.4:
    # pools: 10 for step 0 (1 eval), 5 for steps 1-2 (2 evals), round(2.0) = 2 for steps 3-4.
    sched = PruningSchedule((0, 2), (0.5, 0.4))
    assert sched.survivors(10) == [5, 2]
    cost = CostModel(1.0, 0.25)
    steps = 10 * 1 + 5 * 2 + 2 * 2
    rewards = 10 + 5 + 2
    assert cost.search_cost(10, sched, 5) == pytest.approx(steps + 0.25 * rewards)


def test_survivors_rounding_and_min_keep():
    assert SINGLE.survivors(100) == [40, 16, 8]
    assert MULTI.survivors(100) == [40, 20, 12]
    assert PruningSchedule((0,), (0.5,)).survivors(5) == [2]  # round(2.5) == 2 (banker's)
    assert PruningSchedule((0,), (0.5,)).survivors(7) == [4]  # round(3.5) == 4
    assert PruningSchedule((0, 1), (0.1, 0.1)).survivors(3) == [1, 1]  # never below 1
    assert PruningSchedule((0, 1), (0.1, 0.1), min_keep=3).survivors(10) == [3, 3]
    assert PruningSchedule((0,), (0.1,), min_keep=5).survivors(2) == [2]  # capped by the pool


def test_num_candidates_monotone_and_within_budget():
    cost = CostModel(1.0, 0.1)
    prev = 0
    for b in range(20, 3000, 37):
        n = cost.num_candidates(float(b), SINGLE, 20)
        assert n >= prev
        prev = n
        assert cost.search_cost(max(n, 1), SINGLE, 20) <= b or n == 0
        assert cost.search_cost(n + 1, SINGLE, 20) > b
    assert cost.num_candidates(1000.0, SINGLE, 20) >= 3 * cost.num_candidates(1000.0, None, 20)


def test_bad_schedules():
    with pytest.raises(ValueError, match="strictly increasing"):
        PruningSchedule((2, 2), (0.5, 0.5))
    with pytest.raises(ValueError, match="strictly increasing"):
        PruningSchedule((6, 2), (0.5, 0.5))
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="keep"):
            PruningSchedule((2,), (bad,))
    with pytest.raises(ValueError, match="same length"):
        PruningSchedule((2, 6), (0.5,))
    with pytest.raises(ValueError, match="steps"):
        PruningSchedule((-1,), (0.5,))
    with pytest.raises(ValueError, match="min_keep"):
        PruningSchedule((2,), (0.5,), min_keep=0)
    with pytest.raises(ValueError, match="num_steps - 2"):
        PruningSchedule((2, 19), (0.5, 0.5)).validate(20)
    with pytest.raises(ValueError, match="num_steps - 2"):
        ttsnap_search(_ddim(steps=5), _reward, _inter, PruningSchedule((4,), (0.5,)), n=4)
