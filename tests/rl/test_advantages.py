"""Tests for optforge.rl.advantages: baselines, TRL's formulas, the exact theory on a bandit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from optforge.rl import advantages, optimal_baseline

R = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 3.0]], dtype=torch.float64)


def test_hand_computed_baselines():
    assert torch.equal(advantages(R, 4, baseline="none"), R)
    assert torch.allclose(advantages(R, 4, baseline="batch_mean"), R - 0.75)
    assert torch.allclose(
        advantages(R, 4, baseline="group_mean"), R - torch.tensor([[0.5], [1.0]], dtype=R.dtype)
    )
    # leave-one-out by hand: row 0, sample 0: mean of (0, .5, .5) = 1/3
    rloo = advantages(R, 4, baseline="rloo")
    assert rloo[0, 0].item() == pytest.approx(1 - 1 / 3)
    assert rloo[1, 3].item() == pytest.approx(3 - 1 / 3)
    assert torch.allclose(rloo, 4 / 3 * advantages(R, 4, baseline="group_mean"))
    # weighted, by hand: row 0 sample 1, weights (1, 2, 3, 4): (1*1 + 3*.5 + 4*.5)/(1+3+4)
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=R.dtype)
    b = optimal_baseline(R, w, 4)
    assert b[0, 1].item() == pytest.approx((1 + 1.5 + 2.0) / 8)
    assert optimal_baseline(R, w, 4, leave_one_out=False)[0, 0].item() == pytest.approx(
        (1 + 0 + 1.5 + 2) / 10
    )


@pytest.mark.parametrize("g", [2, 3, 8])
def test_optimal_reduces_to_rloo_and_group_mean_with_equal_weights(g):
    r = torch.rand(5 * g, generator=torch.Generator().manual_seed(g))
    w = torch.full_like(r, 2.5)
    assert torch.allclose(advantages(r, g, weights=w), advantages(r, g, baseline="rloo"))
    assert torch.allclose(
        advantages(r, g, baseline="optimal_ingroup", weights=w),
        advantages(r, g, baseline="group_mean"),
    )


def test_dominant_weight_and_zero_weight_fallback():
    r = torch.tensor([0.3, 0.9, 0.1, 0.6])
    w = torch.tensor([0.0, 5.0, 0.0, 0.0])
    ingroup = optimal_baseline(r, w, 4, leave_one_out=False)
    assert torch.allclose(ingroup, torch.full_like(r, 0.9))
    loo = optimal_baseline(r, w, 4)
    # sample 1's others all weigh 0 -> RLOO mean of the others; the rest see only sample 1
    assert loo[1].item() == pytest.approx((0.3 + 0.1 + 0.6) / 3)
    assert torch.allclose(loo[[0, 2, 3]], torch.full((3,), 0.9))
    # a tiny weight next to a huge one is not lost to cancellation
    w2 = torch.tensor([1e9, 1e-3, 1e-3, 0.0])
    assert optimal_baseline(r, w2, 4)[0].item() == pytest.approx((0.9 + 0.1) / 2, rel=1e-5)


def test_shapes_and_bad_inputs():
    r = torch.rand(12)
    assert advantages(r, 4, baseline="rloo").shape == (12,)
    assert torch.equal(
        advantages(r, 4, baseline="rloo").view(3, 4), advantages(r.view(3, 4), 4, baseline="rloo")
    )
    with pytest.raises(ValueError, match="group_size"):
        advantages(r, 1, baseline="rloo")
    with pytest.raises(ValueError, match="group_size"):
        advantages(r, 1, baseline="none", scale_rewards="group")
    assert advantages(r, 1, baseline="batch_mean").shape == (12,)  # G = 1 fine without groups
    with pytest.raises(ValueError, match="rewards has 12 entries"):
        advantages(r, 5, baseline="rloo")
    with pytest.raises(ValueError, match="rewards has shape"):
        advantages(r.view(4, 3), 4, baseline="rloo")
    with pytest.raises(ValueError, match="rewards contains 1 non-finite"):
        advantages(torch.tensor([1.0, float("nan")]), 2, baseline="rloo")
    with pytest.raises(ValueError, match="rewards contains"):
        advantages(torch.tensor([1.0, float("inf")]), 2, baseline="none")
    with pytest.raises(ValueError, match="weights must be >= 0"):
        advantages(r, 4, weights=-torch.ones(12))
    with pytest.raises(ValueError, match="needs weights"):
        advantages(r, 4, baseline="optimal")
    with pytest.raises(ValueError, match="weights must be a tensor shaped"):
        advantages(r, 4, weights=torch.ones(8))
    with pytest.raises(ValueError, match="baseline must be one of"):
        advantages(r, 4, baseline="mean")
    with pytest.raises(ValueError, match="scale_rewards"):
        advantages(r, 4, scale_rewards="std")
    with pytest.raises(TypeError, match="floating-point"):
        advantages(torch.arange(12), 4, baseline="rloo")


def _trl_advantages(rewards: torch.Tensor, g: int, scale: str) -> torch.Tensor:
    """Transcription of trl 1.x GRPOTrainer._generate_and_score_completions (sum_then_normalize)."""
    mean = rewards.view(-1, g).mean(dim=1).repeat_interleave(g, dim=0)
    if scale in ("group", "none"):
        std = rewards.view(-1, g).std(dim=1).repeat_interleave(g, dim=0)
    else:
        std = rewards.std().expand_as(rewards)
    adv = rewards - mean
    return adv / (std + 1e-4) if scale != "none" else adv


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl_formula_and_zero_std_groups_are_safe(scale):
    r = torch.rand(24, generator=torch.Generator().manual_seed(3))
    r[:8] = 1.0  # a zero-variance group: TRL users see loss 0 / frac_reward_zero_std here
    ours = advantages(r, 8, baseline="group_mean", scale_rewards=scale)
    assert torch.allclose(ours, _trl_advantages(r, 8, scale), atol=1e-6)
    assert torch.isfinite(ours).all()
    assert torch.equal(ours[:8], torch.zeros(8))
    for baseline in ("rloo", "optimal"):
        adv = advantages(r, 8, baseline=baseline, weights=torch.rand(24), scale_rewards=scale)
        assert torch.isfinite(adv).all() and torch.equal(adv[:8], torch.zeros(8))


# ----------------------------------------------------------------------------------------------
# Exact theory on a tabular contextual bandit (softmax policy, K = 5 arms, 3 contexts)
# ----------------------------------------------------------------------------------------------

K, X = 5, 3


def _bandit():
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(X, K, generator=gen, dtype=torch.float64)
    rewards = torch.rand(X, K, generator=gen, dtype=torch.float64)
    probs = torch.softmax(theta, dim=1)
    # score of arm a in context x: e_a - pi(x) in block x; ||s||² = 1 - 2 pi_a + ||pi||²
    scores = torch.eye(K, dtype=torch.float64)[None] - probs[:, None, :]  # [X, K(a), K]
    grad_j = (probs[:, :, None] * rewards[:, :, None] * scores).sum(dim=1)  # [X, K] per context
    return probs, rewards, scores, grad_j


def _per_sample_var(probs, rewards, scores, grad_j, b):
    """tr Cov of (r - b) s for one sample in each context x, b[x] fixed."""
    sq = scores.pow(2).sum(-1)
    second = (probs * sq * (rewards - b[:, None]).pow(2)).sum(dim=1)
    return second - grad_j.pow(2).sum(dim=1)


def test_exact_optimal_baseline_minimises_variance_over_grid():
    probs, rewards, scores, grad_j = _bandit()
    sq = scores.pow(2).sum(-1)
    b_star = (probs * sq * rewards).sum(1) / (probs * sq).sum(1)
    # optimal_baseline computes the same weighted average from (reward, weight) pairs
    ours = optimal_baseline(rewards, probs * sq, K, leave_one_out=False)[:, 0]
    assert torch.allclose(ours, b_star)
    v_star = _per_sample_var(probs, rewards, scores, grad_j, b_star)
    v_mean = _per_sample_var(probs, rewards, scores, grad_j, (probs * rewards).sum(1))
    assert (v_star < v_mean).all()
    grid = torch.linspace(-1, 2, 3001, dtype=torch.float64)
    v_grid = torch.stack(
        [_per_sample_var(probs, rewards, scores, grad_j, b.expand(X)) for b in grid]
    )
    assert (v_star <= v_grid.min(dim=0).values + 1e-12).all()
    assert torch.allclose(grid[v_grid.argmin(dim=0)], b_star, atol=2e-3)


@pytest.mark.parametrize("g", [2, 3])
def test_exact_expectation_by_enumeration(g):
    """E[ĝ] over all K^G groups: LOO baselines unbiased, group mean shrinks by (G-1)/G."""
    probs, rewards, scores, grad_j = _bandit()
    sq = scores.pow(2).sum(-1)
    outcomes = torch.tensor(list(itertools.product(range(K), repeat=g)))  # [K^G, G]
    expected = {
        b: torch.zeros(X, K, dtype=torch.float64) for b in ("rloo", "optimal", "group_mean")
    }
    for x in range(X):
        r = rewards[x][outcomes]
        w = sq[x][outcomes]
        prob = probs[x][outcomes].prod(dim=1)
        s = scores[x][outcomes]  # [K^G, G, K]
        for name in expected:
            adv = advantages(r, g, baseline=name, weights=w)
            g_hat = (adv[..., None] * s).mean(dim=1)
            expected[name][x] = (prob[:, None] * g_hat).sum(dim=0)
    assert torch.allclose(expected["rloo"], grad_j, atol=1e-12)
    assert torch.allclose(expected["optimal"], grad_j, atol=1e-12)
    assert torch.allclose(expected["group_mean"], (g - 1) / g * grad_j, atol=1e-12)


def test_monte_carlo_unbiasedness_and_variance_on_categorical_policy():
    probs, rewards, scores, grad_j = _bandit()
    sq = scores.pow(2).sum(-1)
    gen = torch.Generator().manual_seed(1)
    m, g = 20000, 4
    x = torch.randint(X, (m, 2), generator=gen)  # 2 prompts per batch
    a = torch.multinomial(
        probs[x.repeat_interleave(g, 1)].reshape(-1, K), 1, True, generator=gen
    ).view(m, 2, g)
    xs = x[:, :, None].expand(m, 2, g)
    r, w, s = rewards[xs, a], sq[xs, a], scores[xs, a]  # s: [m, 2, g, K]
    onehot_x = torch.nn.functional.one_hot(xs, X).to(torch.float64)  # gradient lives in block x
    truth = grad_j / X  # E over uniformly drawn contexts
    estimates, variances = {}, {}
    for name in ("none", "rloo", "optimal", "batch_mean"):
        adv = advantages(r.reshape(-1), g, baseline=name, weights=w.reshape(-1))
        if name == "batch_mean":  # per-batch mean over the 2g rewards
            adv = (r - r.mean(dim=(1, 2), keepdim=True)).reshape(m, 2 * g)
        adv = adv.view(m, 2, g)
        full = (adv[..., None, None] * onehot_x[..., None] * s[..., None, :]).mean(dim=(1, 2))
        flat = full.reshape(m, -1)
        mean, se = flat.mean(0), flat.std(0) / math.sqrt(m)
        estimates[name] = (mean, se)
        variances[name] = flat.var(0).sum().item()
    for name in ("none", "rloo", "optimal"):
        mean, se = estimates[name]
        z = (mean - truth.reshape(-1)).abs() / se
        assert z.max() < 4.5, (name, z.max())
    # batch mean includes self: biased by (1 - 1/N); with N = 8 that is visible at this precision
    mean, se = estimates["batch_mean"]
    assert ((mean - truth.reshape(-1)).abs() / se).max() > 4.5
    assert variances["rloo"] < variances["none"]
    assert variances["optimal"] < variances["none"]


# -- issue 24 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [-1.0, math.nan, math.inf])
def test_bad_eps_is_rejected(eps):
    """Before: eps=-1 with all-zero weights divided 0 by 0 and returned NaN advantages."""
    r, w = torch.rand(4), torch.zeros(4)
    with pytest.raises(ValueError, match="eps"):
        advantages(r, 2, weights=w, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        optimal_baseline(r, w, 2, eps=eps)


def test_all_zero_weights_fall_back_to_rloo_with_eps_zero():
    r = torch.tensor([1.0, 3.0, 0.0, 2.0])
    out = advantages(r, 2, weights=torch.zeros(4), eps=0.0)
    torch.testing.assert_close(out, advantages(r, 2, baseline="rloo"))


def test_devices_are_checked():
    r = torch.rand(4)
    with pytest.raises(ValueError, match="weights"):
        advantages(r, 2, weights=torch.ones(4, device="meta"))
    with pytest.raises(ValueError, match="rewards"):
        advantages(r.to("meta"), 2, baseline="rloo")
