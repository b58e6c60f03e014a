"""Offline simulation: vectorised picks against a slow loop reference, best-of-one, budget
curves and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from _ttsnap_helpers import SINGLE

from optforge.diffusion.ttsnap import (
    CostModel,
    PruningSchedule,
    reward_budget_curve,
    simulate_best_of_n,
    simulate_ttsnap,
)


def _slow_pick(inter, final, sched, subset):
    """Loop reference: stable sort by score (or competition-rank Borda), best first."""

    def key(scores):  # list of float or list of tuple
        if isinstance(scores[0], tuple):
            ranks = [0] * len(scores)
            for r in range(len(scores[0])):
                for i, si in enumerate(scores):
                    ranks[i] += sum(1 for sj in scores if sj[r] < si[r])
            return ranks
        return scores

    pool = list(subset)
    for s, k in zip(sched.steps, sched.survivors(len(pool)), strict=True):
        sc = key([_item(inter[m, s]) for m in pool])
        ranked = sorted(range(len(pool)), key=lambda i: -sc[i])  # Python's sort is stable
        pool = [pool[i] for i in ranked[:k]]
    sc = key([_item(final[m]) for m in pool])
    return pool[sorted(range(len(pool)), key=lambda i: -sc[i])[0]]


def _item(v):
    return tuple(v.tolist()) if v.dim() else float(v)


@pytest.mark.parametrize("rewards", [0, 3])
def test_simulation_matches_slow_reference(rewards):
    gen = torch.Generator().manual_seed(rewards)
    P, M, S, n, reps = 3, 25, 8, 17, 4
    shape = (P, M, S) if rewards == 0 else (P, M, S, rewards)
    inter = torch.randint(0, 6, shape, generator=gen).float()  # ties on purpose
    final = torch.randint(0, 6, shape[:2] + shape[3:], generator=gen).float()
    sched = PruningSchedule((1, 4), (0.5, 0.7))
    order = torch.rand(P, reps, M, generator=gen).argsort(-1)
    picks = simulate_ttsnap(inter, final, sched, n, order=order, return_index=True)
    values = simulate_ttsnap(inter, final, sched, n, order=order)
    for p in range(P):
        for r in range(reps):
            ref = _slow_pick(inter[p], final[p], sched, order[p, r, :n].tolist())
            assert int(picks[p, r]) == ref
            assert torch.equal(values[p, r], final[p, ref])


def test_best_of_one_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    final = torch.randn(2, 500, generator=gen, dtype=torch.float64)
    picks = simulate_best_of_n(final, 1, repeats=4000, generator=gen)
    se = final.std(1) / math.sqrt(4000)
    assert ((picks.mean(1) - final.mean(1)).abs() < 4 * se).all()
    with pytest.warns(UserWarning, match="capped"):
        full = simulate_best_of_n(final, 900, repeats=2, generator=gen)
    assert torch.equal(full, final.max(1).values[:, None].expand(2, 2))


def test_reward_budget_curve_is_bon_for_empty_schedule():
    gen = torch.Generator().manual_seed(1)
    final = torch.randn(4, 200, generator=gen)
    inter = torch.randn(4, 200, 20, generator=gen)
    cost = CostModel(1.0, 0.0)
    order = torch.rand(4, 30, 200, generator=gen).argsort(-1)
    curve = reward_budget_curve(inter, final, None, [20.0, 100.0, 400.0], cost, 20, order=order)
    for b, v in zip([1, 5, 20], curve, strict=True):
        assert v == pytest.approx(float(simulate_best_of_n(final, b, order=order).mean()))
    assert (curve[1:] >= curve[:-1]).all()  # common random subsets: prefixes grow


def test_bad_simulation_inputs():
    final = torch.randn(2, 10)
    with pytest.raises(ValueError, match="does not match"):
        simulate_ttsnap(torch.randn(2, 9, 20), final, SINGLE, 5)
    with pytest.raises(ValueError, match="does not match"):
        simulate_ttsnap(torch.randn(2, 10, 20, 2), final, SINGLE, 5)
    with pytest.raises(ValueError, match="final"):
        simulate_ttsnap(None, torch.randn(10), None, 5)
    with pytest.raises(ValueError, match="non-finite"):
        simulate_best_of_n(torch.full((2, 10), float("nan")), 3)
    with pytest.raises(ValueError, match="n must be"):
        simulate_best_of_n(final, 0)
    with pytest.raises(ValueError, match="out of range"):
        simulate_ttsnap(torch.randn(2, 10, 5), final, SINGLE, 5)


@pytest.mark.parametrize("rewards", [0, 2])
def test_reward_budget_curve_equals_simulate_per_budget_with_ties(rewards):
    # the curve checks its inputs once and replays the search per budget (pool cap included)
    gen = torch.Generator().manual_seed(2)
    P, M, S = 3, 40, 8
    shape = (P, M, S) if rewards == 0 else (P, M, S, rewards)
    inter = torch.randint(0, 4, shape, generator=gen).float()  # ties on purpose
    final = torch.randint(0, 4, shape[:2] + shape[3:], generator=gen).float()
    sched = PruningSchedule((1, 4), (0.5, 0.7))
    cost = CostModel(1.0, 0.1)
    order = torch.rand(P, 6, M, generator=gen).argsort(-1)
    budgets = [10.0, 60.0, 500.0]  # the last buys more seeds than the pool holds
    curve = reward_budget_curve(inter, final, sched, budgets, cost, S, order=order)
    for b, v in zip(budgets, curve, strict=True):
        n = min(cost.num_candidates(b, sched, S), M)
        want = simulate_ttsnap(inter, final, sched, n, order=order).float().mean(dim=(0, 1))
        assert torch.equal(v, want)
    with pytest.raises(ValueError, match="order must be"):
        reward_budget_curve(inter, final, sched, budgets, cost, S, order=order[:, :, :5])
    with pytest.raises(ValueError, match="non-finite"):
        reward_budget_curve(inter * float("nan"), final, sched, budgets, cost, S, order=order)
    with pytest.raises(ValueError, match="out of range"):
        reward_budget_curve(inter[:, :, :3], final, sched, budgets, cost, S, order=order)
