"""Online search: best-of-N equivalences, online = offline, budgets, Borda, bad arguments, and
the deprecated ``ttsnap.best_of_n`` alias."""

from __future__ import annotations

import warnings

import pytest
import torch
from _ttsnap_helpers import SINGLE, _ddim, _FrozenSampler, _inter, _reward

from optforge.diffusion.ttsnap import (
    CostModel,
    PruningSchedule,
    borda_scores,
    sampler_best_of_n,
    simulate_ttsnap,
    ttsnap_search,
)


def test_empty_schedule_and_keep_one_equal_best_of_n():
    sampler = _ddim()
    noise = torch.randn(24, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bon = sampler_best_of_n(sampler, _reward, noise=noise)
    empty = ttsnap_search(sampler, _reward, _inter, PruningSchedule(), noise=noise)
    ones = ttsnap_search(sampler, _reward, _inter, PruningSchedule((3, 9), (1.0, 1.0)), noise=noise)
    for res in (empty, ones):
        assert res.seed_index == bon.seed_index
        assert torch.equal(res.image, bon.image)
    # Best-of-N is the argmax of the final reward over all seeds.
    state = sampler.init(24, None, None, noise)
    for s in range(sampler.num_steps):
        state, x0 = sampler.step(state, s)
    assert bon.seed_index == int(_reward(x0, None).argmax())
    assert bon.cost_spent == pytest.approx(24 * 20)


def test_perfect_intermediate_reward_matches_best_of_n():
    sampler = _FrozenSampler()
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        noise = torch.randn(40, 3, generator=gen)
        bon = sampler_best_of_n(sampler, _reward, noise=noise)
        perfect = lambda x, c, s: _reward(x, c)  # noqa: E731
        res = ttsnap_search(sampler, _reward, perfect, SINGLE, noise=noise)
        assert res.seed_index == bon.seed_index
        assert res.pool_sizes == [40, 16, 6, 3]


def test_online_equals_offline_simulation():
    sampler = _ddim(seed=2)
    n = 40
    noise = torch.randn(n, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    # Precompute every seed's intermediate scores and final reward (no pruning).
    state = sampler.init(n, None, None, noise)
    inter = torch.empty(1, n, sampler.num_steps, dtype=torch.float64)
    for s in range(sampler.num_steps):
        state, x0 = sampler.step(state, s)
        inter[0, :, s] = _inter(x0, None, s)
    final = _reward(x0, None)[None]
    order = torch.arange(n)[None, None]
    for sched in (SINGLE, PruningSchedule((0, 5, 17), (0.3, 0.5, 0.5))):
        res = ttsnap_search(sampler, _reward, _inter, sched, noise=noise)
        sim = simulate_ttsnap(inter, final, sched, n, order=order, return_index=True)
        assert res.seed_index == int(sim[0, 0])
        assert res.pool_sizes == [n, *sched.survivors(n)]


def test_budget_safety_and_mapping_rewards():
    sampler = _ddim()
    cost = CostModel(1.0, 0.3)
    rewards = {s: (lambda x, c, s=s: _inter(x, c, s)) for s in SINGLE.steps}
    gen = torch.Generator().manual_seed(0)
    for budget in (21.2, 77.0, 250.0, 613.0):
        res = ttsnap_search(
            sampler, _reward, rewards, SINGLE, budget=budget, cost=cost, generator=gen
        )
        assert res.cost_spent <= budget
        assert res.cost_spent == pytest.approx(cost.search_cost(res.n_candidates, SINGLE, 20))
        assert res.n_candidates == cost.num_candidates(budget, SINGLE, 20)
    with pytest.raises(ValueError, match="budget"):
        ttsnap_search(sampler, _reward, rewards, SINGLE, budget=5.0, cost=cost)


def test_multi_reward_online_uses_borda():
    sampler = _ddim()
    noise = torch.randn(30, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def two(x, c):
        return torch.stack([_reward(x, c), x[:, 2]], dim=1)

    res = sampler_best_of_n(sampler, two, noise=noise)
    final = res.scores[19]
    expected = int(torch.sort(borda_scores(final), descending=True, stable=True).indices[0])
    assert res.seed_index == int(res.survivors[19][expected])
    assert res.reward.shape == (2,)


def test_bad_search_arguments():
    sampler = _ddim()
    with pytest.raises(ValueError, match="exactly one of n and budget"):
        ttsnap_search(sampler, _reward, _inter, SINGLE)
    with pytest.raises(ValueError, match="exactly one of n and budget"):
        ttsnap_search(sampler, _reward, _inter, SINGLE, n=4, budget=100.0)
    with pytest.raises(ValueError, match="n must be"):
        ttsnap_search(sampler, _reward, _inter, SINGLE, n=0)
    with pytest.raises(ValueError, match="reward must return shape"):
        ttsnap_search(sampler, lambda x, c: x[:, :, None], _inter, SINGLE, n=4)
    with pytest.raises(ValueError, match="non-finite"):
        ttsnap_search(sampler, _reward, lambda x, c, s: x[:, 0] * float("nan"), SINGLE, n=4)
    with pytest.raises(ValueError, match="step_cost"):
        CostModel(0.0)
    with pytest.raises(ValueError, match="reward_cost"):
        CostModel(1.0, -1.0)
    with pytest.raises(ValueError, match="convention"):
        CostModel(1.0, 0.0, "paper")
    with pytest.raises(ValueError, match="budget"):
        CostModel().num_candidates(0.0, None, 20)


def test_deprecated_best_of_n_alias_warns_and_matches():
    import optforge.diffusion.ttsnap as ttsnap
    from optforge.diffusion import best_of_n as package_best_of_n
    from optforge.diffusion.reno import best_of_n as reno_best_of_n

    sampler = _ddim()
    noise = torch.randn(24, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    new = sampler_best_of_n(sampler, _reward, noise=noise)
    with pytest.warns(DeprecationWarning, match="sampler_best_of_n"):
        old = ttsnap.best_of_n(sampler, _reward, noise=noise)
    assert old.seed_index == new.seed_index and torch.equal(old.image, new.image)
    with pytest.warns(DeprecationWarning, match="ttsnap.best_of_n is deprecated"):
        positional = ttsnap.best_of_n(sampler, _reward, 24, None, noise=noise)
    assert positional.seed_index == new.seed_index
    assert positional.cost_spent == new.cost_spent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name does not warn
        sampler_best_of_n(sampler, _reward, noise=noise)
    # There is one best_of_n at the package level: ReNO's random search.
    assert package_best_of_n is reno_best_of_n
    assert "best_of_n" in ttsnap.__all__ and "sampler_best_of_n" in ttsnap.__all__
