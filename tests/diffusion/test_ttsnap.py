"""Tests of TTSnap: cost accounting, survivor arithmetic, ranking, search, simulation, metrics,
noise-aware distillation and the diffusers adapter (spec ``ttsnap.md`` §7)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from optforge.diffusion.ttsnap import (
    CostModel,
    DDIMSampler,
    NoiseAwareDistiller,
    NoiseAwareReward,
    PruningSchedule,
    SamplerState,
    TrajectoryDataset,
    alignment_metrics,
    best_of_n,
    borda_scores,
    relative_area_gain,
    reward_budget_curve,
    simulate_best_of_n,
    simulate_ttsnap,
    ttsnap_search,
)

SINGLE = PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5))
MULTI = PruningSchedule((4, 6, 11), (0.4, 0.5, 0.6))


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _abar() -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def _ddim(dim: int = 6, steps: int = 20, seed: int = 0) -> DDIMSampler:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, dim)).double()

    def denoiser(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        return net(torch.cat([x, t[:, None].double() / 1000], dim=1))

    timesteps = torch.linspace(999, 0, steps).round().long()
    return DDIMSampler(denoiser, _abar(), timesteps, (dim,), clip_x0=3.0)


def _reward(x: torch.Tensor, cond: object) -> torch.Tensor:
    return -((x - 0.3) ** 2).sum(1) + x[:, 0]


def _inter(x: torch.Tensor, cond: object, step: int) -> torch.Tensor:
    return _reward(x, cond) + 0.1 * math.sin(step) * x[:, 1]


class _FrozenSampler:
    """The estimate is the seed itself at every step (a perfect intermediate reward)."""

    num_steps = 20

    def init(self, n, cond, generator, noise=None):
        x = torch.randn(n, 3, generator=generator) if noise is None else noise
        return SamplerState(x, cond, torch.arange(n))

    def step(self, state, step_index):
        return state, state.x

    def select(self, state, index):
        return SamplerState(state.x[index], state.cond, state.index[index])

    def decode(self, x0_hat):
        return x0_hat


# ---------------------------------------------------------------------------------------------
# 1-2. Cost model and survivor arithmetic
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 5. Borda ranks
# ---------------------------------------------------------------------------------------------


def test_borda_scores_known_values_and_ties():
    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.0, 0.0]])
    # reward 0 ranks: 0, 1, 3, 1 (tie shares the lower rank); reward 1: 3, 2, 1, 0.
    assert borda_scores(scores).tolist() == [3, 3, 4, 1]


def test_borda_single_reward_equals_argmax_with_ties():
    gen = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 5, (50, 30), generator=gen).float()  # many ties
    order = torch.arange(30).expand(50, 1, 30)
    single = simulate_best_of_n(vals, 30, order=order, return_index=True)
    multi = simulate_best_of_n(vals[:, :, None], 30, order=order, return_index=True)
    assert torch.equal(single, multi)
    first_max = (vals == vals.max(1, keepdim=True).values).float().argmax(1)  # lowest index
    assert torch.equal(single[:, 0], first_max)


# ---------------------------------------------------------------------------------------------
# 3, 6, 10. Online search
# ---------------------------------------------------------------------------------------------


def test_empty_schedule_and_keep_one_equal_best_of_n():
    sampler = _ddim()
    noise = torch.randn(24, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bon = best_of_n(sampler, _reward, noise=noise)
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
        bon = best_of_n(sampler, _reward, noise=noise)
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

    res = best_of_n(sampler, two, noise=noise)
    final = res.scores[19]
    expected = int(torch.sort(borda_scores(final), descending=True, stable=True).indices[0])
    assert res.seed_index == int(res.survivors[19][expected])
    assert res.reward.shape == (2,)


# ---------------------------------------------------------------------------------------------
# 4. Vectorised simulation vs a slow reference
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 9. Metrics
# ---------------------------------------------------------------------------------------------


def test_relative_area_gain_closed_forms():
    b = torch.linspace(200.0, 1000.0, 9)
    r = (b - 200.0) / 800.0  # area above r(B_min) = 800 / 2 = 400
    assert relative_area_gain(b, r, r) == pytest.approx(0.0, abs=1e-12)
    delta = 0.1
    assert relative_area_gain(b, r + delta, r) == pytest.approx(100 * delta * 800 / 400)
    assert relative_area_gain(b, 2 * r, r) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="not positive"):
        relative_area_gain(b, r, torch.zeros(9))


def test_alignment_metrics_perfect_and_reversed():
    gen = torch.Generator().manual_seed(0)
    final = torch.randn(5, 60, generator=gen)
    perfect = alignment_metrics(final, final)
    assert perfect["kendall"] == pytest.approx(1.0)
    assert perfect["top_acc"] == 1.0 and perfect["top_acc@0.25"] == 1.0
    assert perfect["top_gap"] == 0.0 and perfect["mse"] == 0.0
    worst = alignment_metrics(-final, final, alphas=[0.05])
    assert worst["kendall"] == pytest.approx(-1.0)
    assert worst["top_acc"] == 0.0 and worst["top_gap"] > 0


# ---------------------------------------------------------------------------------------------
# 8. Distillation
# ---------------------------------------------------------------------------------------------


def _mixing_dataset(T: int, gen: torch.Generator):
    """Teacher r(x) = x_0; step-s estimates mix the coordinates (the teacher ranks them badly)."""
    d, levels = 4, [3, 2, 1, 0]
    x0 = torch.randn(T, d, generator=gen)
    mats = []
    for s in levels:
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
        mats.append(q * (0.5 + 0.1 * s))
    est = torch.stack([x0 @ m for m in mats], dim=1) + 0.05 * torch.randn(T, 4, d, generator=gen)
    return x0, est, levels


def _teacher() -> nn.Module:
    lin = nn.Linear(4, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        lin.bias.zero_()
    return nn.Sequential(lin, nn.Flatten(0))


@pytest.mark.slow
def test_distillation_reduces_rank_disagreement_on_held_out():
    gen = torch.Generator().manual_seed(0)
    x0, est, levels = _mixing_dataset(1200, gen)
    teacher = _teacher()
    with torch.no_grad():
        targets = teacher(x0)
    train = TrajectoryDataset(est[:1000], targets[:1000], levels)
    distiller = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=150,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=3e-2, weight_decay=0.01),
    )
    snaps = distiller.fit(train, batch_size=100)
    reward = NoiseAwareReward(teacher, snaps)
    held = TrajectoryDataset(est[1000:], targets[1000:], levels)
    with torch.no_grad():
        for s in levels:
            before = alignment_metrics(teacher(held.at(s))[None], held.targets[None])["kendall"]
            after = alignment_metrics(reward(held.at(s), None, s)[None], held.targets[None])
            assert after["kendall"] > before + 0.3
            assert after["kendall"] > 0.8
            h = distiller.history[s]
            assert sum(h[-10:]) < sum(h[:10])  # the loss decreases at every level
    # Steps without a snapshot use the teacher; teacher parameters are untouched.
    assert reward.model_for(7) is teacher
    assert torch.equal(teacher[0].weight, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_distiller_snapshots_are_independent_and_optimizer_reset():
    gen = torch.Generator().manual_seed(1)
    x0, est, levels = _mixing_dataset(300, gen)
    teacher = _teacher()
    ds = TrajectoryDataset(est, teacher(x0).detach(), levels)
    distiller = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=7,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    snaps = distiller.fit(ds, batch_size=64)
    weights = [snaps[s][0].weight for s in levels]
    assert len({id(snaps[s]) for s in levels}) == len(levels)
    for a, b in itertools.pairwise(weights):
        assert a.data_ptr() != b.data_ptr() and not torch.equal(a, b)
    opts = [distiller.optimizers[s] for s in levels]
    assert len({id(o) for o in opts}) == len(levels)
    for o in opts:  # fresh AdamW per level: its step counters saw only that level's 7 steps
        assert all(int(st["step"]) == 7 for st in o.state.values())
        assert o.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 - 0.5 * 7 / 7))
    # Re-fitting with the same seed is deterministic.
    again = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=7,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=1e-2),
    ).fit(ds, batch_size=64)
    assert all(torch.equal(again[s][0].weight, snaps[s][0].weight) for s in levels)


def test_distiller_noise_invariant_teacher_stays_put():
    # Reward = image mean; every estimate has the final image's mean -> zero loss, no update.
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(200, 8, generator=gen)
    noise = torch.randn(200, 3, 8, generator=gen)
    est = x0[:, None] + noise - noise.mean(-1, keepdim=True)
    teacher = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        teacher.weight.fill_(1 / 8)
    model = nn.Sequential(teacher, nn.Flatten(0))
    ds = TrajectoryDataset(est, model(x0).detach(), [2, 1, 0])
    distiller = NoiseAwareDistiller(
        model,
        levels=[2, 1, 0],
        steps_per_level=10,
        optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1),
    )
    snaps = distiller.fit(ds, batch_size=50)
    assert max(max(h) for h in distiller.history.values()) < 1e-12
    for s in (2, 1, 0):
        torch.testing.assert_close(snaps[s][0].weight, model[0].weight, atol=1e-7, rtol=0)


def test_trajectory_dataset_generate():
    sampler = _ddim()
    ds = TrajectoryDataset.generate(
        sampler,
        lambda x: _reward(x, None),
        10,
        [0, 5, 19],
        generator=torch.Generator().manual_seed(0),
        batch_size=4,
    )
    assert ds.estimates.shape == (10, 3, 6) and ds.targets.shape == (10,)
    torch.testing.assert_close(ds.targets, _reward(ds.at(19), None))


# ---------------------------------------------------------------------------------------------
# 7. Diffusers adapter
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_diffusers_sampler_tweedie_and_pruning():
    diffusers = pytest.importorskip("diffusers")
    from optforge.diffusion.ttsnap import DiffusersSampler

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sampler = DiffusersSampler(unet, sched, (1, 8, 8), num_inference_steps=6)
    assert sampler.num_steps == 6
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = sampler.init(4, None, None, noise)
        t = sched.timesteps[0]
        eps = unet(state.x, t).sample
        a = sched.alphas_cumprod[t]
        new, x0 = sampler.step(state, 0)
        torch.testing.assert_close(x0, (state.x - (1 - a).sqrt() * eps) / a.sqrt())
        # Pruning rows between steps leaves the kept rows' trajectories unchanged.
        full, pruned = new, sampler.select(new, torch.tensor([2, 0]))
        for s in range(1, 6):
            full, x_full = sampler.step(full, s)
            pruned, x_pruned = sampler.step(pruned, s)
        torch.testing.assert_close(x_pruned, x_full[[2, 0]], atol=1e-5, rtol=1e-5)
        assert pruned.index.tolist() == [2, 0]
        res = ttsnap_search(
            sampler,
            lambda x, c: x.mean((1, 2, 3)),
            lambda x, c, s: x.mean((1, 2, 3)),
            PruningSchedule((1,), (0.5,)),
            noise=noise,
        )
    assert res.pool_sizes == [4, 2]


# ---------------------------------------------------------------------------------------------
# 11. Bad inputs
# ---------------------------------------------------------------------------------------------


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
