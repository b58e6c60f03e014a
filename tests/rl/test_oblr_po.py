"""Tests for optforge.rl.oblr_po: baselines, score norms, SNR controller, loss, trainer."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from optforge.rl import (
    OBLRPOTrainer,
    SNRLearningRate,
    TinyCausalLM,
    advantages,
    loss_coefficients,
    optimal_baseline,
    policy_gradient_loss,
    score_sqnorms,
    token_logprobs,
)

# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------

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


def test_snr_step_size_maximises_quadratic_bound():
    for g2, s2, lip in [(1.0, 3.0, 2.0), (0.2, 0.01, 10.0), (5.0, 50.0, 0.5)]:
        snr = g2 / s2
        eta_star = snr / (1 + snr) / lip
        etas = torch.linspace(0, 2 / lip, 200001, dtype=torch.float64)
        gain = etas * g2 - lip * etas.pow(2) / 2 * (g2 + s2)
        assert etas[gain.argmax()].item() == pytest.approx(eta_star, abs=2e-5 / lip)
        assert gain.max().item() == pytest.approx(g2**2 / (2 * lip * (g2 + s2)), rel=1e-6)


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


# ----------------------------------------------------------------------------------------------
# Score norms
# ----------------------------------------------------------------------------------------------


def _batch(n=6, t=9, vocab=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n, t), generator=gen)
    attn = torch.ones_like(ids)
    attn[0, -2:] = 0  # right padding
    resp = torch.zeros_like(ids)
    resp[:, 5:] = 1
    resp[0, -2:] = 0
    resp[1, -1] = 0  # variable response lengths
    return ids, attn, resp


def _tiny(seed=0, **kw):
    cfg = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_mlp": 48, "max_len": 16}
    cfg.update(kw)
    return TinyCausalLM(10, generator=torch.Generator().manual_seed(seed), **cfg)


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=10,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize(
    "factory", [_tiny, pytest.param(_tiny_llama, marks=pytest.mark.slow)], ids=["tiny", "llama"]
)
def test_ghost_equals_exact(factory):
    model = factory()
    ids, attn, resp = _batch()
    exact = score_sqnorms(model, ids, attn, resp, method="exact")
    ghost = score_sqnorms(model, ids, attn, resp, method="ghost")
    assert torch.allclose(ghost, exact, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    # padding contributes nothing: trimming the padded tail of sample 0 leaves its norm unchanged
    short = score_sqnorms(model, ids[:1, :7], attn[:1, :7], resp[:1, :7], method="ghost")
    assert short.item() == pytest.approx(ghost[0].item(), rel=1e-4)


def test_head_and_logit_norms_match_explicit_computations():
    model = _tiny()
    ids, attn, resp = _batch()
    head = score_sqnorms(model, ids, attn, resp, method="head")
    for i in range(ids.shape[0]):
        seq = (token_logprobs(model, ids[i : i + 1], attn[i : i + 1]) * resp[i]).sum()
        grads = torch.autograd.grad(seq, list(model.head.parameters()))
        assert head[i].item() == pytest.approx(sum(g.pow(2).sum() for g in grads).item(), rel=1e-4)
    temp = 0.7
    logit = score_sqnorms(model, ids, attn, resp, method="logit", temperature=temp)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1] / temp, -1)
        onehot = torch.nn.functional.one_hot(ids[:, 1:], 10).float()
        explicit = ((probs - onehot).pow(2).sum(-1) / temp**2 * resp[:, 1:]).sum(1)
    assert torch.allclose(logit, explicit, rtol=1e-5)
    assert torch.equal(score_sqnorms(model, ids, attn, resp, method="length"), resp.sum(1).float())
    assert torch.equal(score_sqnorms(model, ids, attn, resp, method="uniform"), torch.ones(6))


def test_score_norm_bad_inputs():
    model = _tiny()
    ids, attn, resp = _batch()
    bad = resp.clone()
    bad[2] = 0
    with pytest.raises(ValueError, match="no response token"):
        score_sqnorms(model, ids, attn, bad)
    first = resp.clone()
    first[:, 0] = 1
    with pytest.raises(ValueError, match=r"response_mask\[:, 0\]"):
        score_sqnorms(model, ids, attn, first)
    with pytest.raises(ValueError, match="response_mask must have shape"):
        score_sqnorms(model, ids, attn, resp[:, :-1])
    with pytest.raises(ValueError, match="method must be one of"):
        score_sqnorms(model, ids, attn, resp, method="fast")

    class NoHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask=None):
            return {"last_hidden_state": self.emb(input_ids)}

    with pytest.raises(TypeError, match="causal language model"):
        score_sqnorms(NoHead(), ids, attn, resp, method="logit")

    class Extra(nn.Module):  # a parameter ghost norms cannot see
        def __init__(self):
            super().__init__()
            self.lm = _tiny()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, input_ids, attention_mask=None):
            return self.lm(input_ids, attention_mask).logits * self.scale

    with pytest.raises(ValueError, match="method='exact'"):
        score_sqnorms(Extra(), ids, attn, resp, method="ghost")
    exact = score_sqnorms(Extra(), ids, attn, resp, method="exact")
    assert exact.shape == (6,)


def test_base_model_without_lm_head_is_rejected():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    ids, attn, resp = _batch()
    with pytest.raises(TypeError, match="LM head"):
        score_sqnorms(transformers.LlamaModel(cfg), ids, attn, resp, method="logit")


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def test_loss_types_match_trl_aggregations():
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 6, generator=gen, dtype=torch.float64)
    resp = torch.tensor(
        [[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    )
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    m = resp.double()
    per_tok = -adv[:, None] * logp * m
    expected = {
        "seq_sum": per_tok.sum(1).mean(),
        "grpo": (per_tok.sum(1) / m.sum(1)).mean(),
        "dapo": per_tok.sum() / m.sum(),
        "bnpo": per_tok.sum() / m.sum(),
        "dr_grpo": per_tok.sum() / (4 * 6),
    }
    for loss_type, value in expected.items():
        got = policy_gradient_loss(logp, adv, resp, loss_type=loss_type)
        assert got.item() == pytest.approx(value.item(), rel=1e-6), loss_type
    assert loss_coefficients(resp, "grpo")[2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_type"):
        policy_gradient_loss(logp, adv, resp, loss_type="token")
    with pytest.raises(ValueError, match="advantages must have shape"):
        policy_gradient_loss(logp, adv[:3], resp)


# ----------------------------------------------------------------------------------------------
# SNR controller
# ----------------------------------------------------------------------------------------------


def _opt(kind="sgd", groups=2):
    params = [nn.Parameter(torch.zeros(50)) for _ in range(groups)]
    pg = [{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(params)]
    opt = torch.optim.SGD(pg) if kind == "sgd" else torch.optim.Adam(pg)
    return opt, params


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("route", ["per_sample", "microbatch", "temporal"])
def test_snr_estimate_converges(kind, route):
    opt, params = _opt(kind)
    d, n, sigma = 100, 32, 0.5
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(d, generator=gen, dtype=torch.float64) * 0.1
    target = mu.pow(2).sum() / (mu.pow(2).sum() + sigma**2 * d / n)
    ctl = SNRLearningRate(opt, beta=0.95 if route == "temporal" else 0.9, rho_min=0.01)
    rhos = []
    for _ in range(400):
        g_i = mu + sigma * torch.randn(n, d, generator=gen, dtype=torch.float64)
        gbar = g_i.mean(0)
        params[0].grad, params[1].grad = gbar[:50].float(), gbar[50:].float()
        if route == "per_sample":
            rho = ctl.update_from_per_sample(g_i.pow(2).sum(), n)
        elif route == "microbatch":
            rho = ctl.update_from_microbatches(g_i.view(8, 4, d).mean(1).pow(2).sum(1).tolist())
        else:
            rho = ctl.update_from_gradient()
        ctl.step()
        rhos.append(rho)
        assert 0.01 <= rho <= 1.0
    est = sum(rhos[100:]) / 300
    assert est == pytest.approx(target.item(), rel=0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * rho, 0.2 * rho])
    opt.step()  # composes with the optimizer


def test_snr_floor_state_dict_and_bad_args():
    opt, params = _opt()
    ctl = SNRLearningRate(opt, lr_max=1.0, rho_min=0.2)
    assert ctl.base_lrs == [1.0, 1.0]
    params[0].grad, params[1].grad = torch.zeros(50), torch.zeros(50)
    assert ctl.update_from_per_sample(5.0, 8) == 1.0  # zero gradient: skipped, rho kept
    assert ctl.num_skipped == 1
    params[0].grad = torch.full((50,), 1e-3)
    assert ctl.update_from_per_sample(1e6, 8) == 0.2  # pure noise: floor
    ctl.update_from_gradient()
    ctl.update_from_gradient()
    sd = ctl.state_dict()
    clone = SNRLearningRate(_opt()[0], lr_max=3.0)
    clone.load_state_dict(sd)
    for c in (ctl, clone):
        params[0].grad = torch.full((50,), 0.1)
        c.optimizer = opt
    assert ctl.update_from_per_sample(3.0, 8) == clone.update_from_per_sample(3.0, 8)
    assert ctl.update_from_gradient() == clone.update_from_gradient()
    assert clone.base_lrs == [1.0, 1.0]
    for kwargs, match in [
        ({"lr_max": 0.0}, "lr_max"),
        ({"lr_max": -1.0}, "lr_max"),
        ({"rho_min": 0.0}, "rho_min"),
        ({"rho_min": 1.5}, "rho_min"),
        ({"beta": 1.0}, "beta"),
        ({"rho_max": 0.01}, "rho_max"),
    ]:
        with pytest.raises(ValueError, match=match):
            SNRLearningRate(opt, **kwargs)
    with pytest.raises(TypeError, match="optimizer"):
        SNRLearningRate(params)
    with pytest.raises(ValueError, match="at least 2"):
        ctl.update_from_microbatches([1.0])


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


def _reward(prompt_ids, response_ids):
    target = (prompt_ids[:, -1:] + torch.arange(1, response_ids.shape[1] + 1)) % 10
    return (response_ids == target).float().mean(1)


def _trainer(seed=0, **kw):
    model = _tiny(seed, n_layers=1, d_model=16, d_mlp=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    snr = kw.pop("snr", False)
    args = {"group_size": 4, "max_new_tokens": 3, "generator": torch.Generator().manual_seed(seed)}
    args.update(kw)
    return OBLRPOTrainer(model, _reward, opt, snr_lr=SNRLearningRate(opt) if snr else None, **args)


def test_trainer_is_deterministic_and_on_policy():
    prompts = torch.randint(10, (3, 4), generator=torch.Generator().manual_seed(5))
    runs = []
    for _ in range(2):
        tr = _trainer(snr=True)
        runs.append([tr.step(prompts) for _ in range(3)])
        runs[-1].append(torch.cat([p.detach().flatten() for p in tr.model.parameters()]))
    for a, b in zip(runs[0][:3], runs[1][:3], strict=True):
        assert a == b
        assert a["logprob_gap"] < 1e-5  # log-probs recomputed under the sampling parameters
        assert 0.05 <= a["rho"] <= 1.0
    assert torch.equal(runs[0][3], runs[1][3])


@pytest.mark.parametrize(
    "kw",
    [
        {"norm_method": "exact"},
        {"norm_method": "logit", "snr": True, "snr_microbatches": 3},
        {"baseline": "group_mean", "scale_rewards": "group", "loss_type": "dapo"},
        {"eos_token_id": 3, "loss_type": "grpo", "snr": True},
    ],
)
def test_trainer_variants_run(kw):
    tr = _trainer(**kw)
    prompts = torch.randint(10, (3, 4), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        m = tr.step(prompts)
    assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])
    assert m["logprob_gap"] < 1e-5


def test_trainer_fused_ghost_path_matches_separate_weights():
    """Weights from the fused forward equal score_sqnorms; advantages carry no gradient."""
    tr = _trainer()
    prompts = torch.randint(10, (2, 4), generator=torch.Generator().manual_seed(2))
    ids, attn, resp, _ = _trainer().generate(prompts)
    w = score_sqnorms(tr.model, ids, attn, resp)
    m = tr.step(prompts)
    assert m["weight_mean"] == pytest.approx(w.mean().item(), rel=1e-5)
    assert not w.requires_grad
    assert not advantages(_reward(ids[:, :4], ids[:, 4:]), 4, weights=w).requires_grad


def test_zero_variance_groups_give_zero_gradient():
    model = _tiny(0, n_layers=1, d_model=16, d_mlp=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    const = OBLRPOTrainer(
        model, lambda p, r: torch.ones(r.shape[0]), opt, group_size=4, max_new_tokens=2,
        snr_lr=SNRLearningRate(opt), generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    m = const.step(torch.randint(10, (2, 3)))
    assert m["frac_reward_zero_std"] == 1.0 and m["grad_norm"] == 0.0 and m["loss"] == 0.0
    assert m["rho"] == 1.0 and const.snr_lr.num_skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_trainer_bad_inputs():
    prompts = torch.randint(10, (2, 4))
    for fn, match in [
        (lambda p, r: torch.ones(3), "shape"),
        (lambda p, r: torch.full((r.shape[0],), float("nan")), "non-finite"),
    ]:
        tr = _trainer()
        tr.reward_fn = fn
        with pytest.raises(ValueError, match=match):
            tr.step(prompts)
    with pytest.raises(ValueError, match="group_size"):
        _trainer(group_size=1)
    with pytest.raises(ValueError, match="baseline"):
        _trainer(baseline="avg")
    with pytest.raises(ValueError, match="snr_lr must wrap"):
        model = _tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        other = torch.optim.SGD(model.parameters(), lr=0.1)
        OBLRPOTrainer(model, _reward, opt, snr_lr=SNRLearningRate(other), max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_ids"):
        _trainer().step(torch.rand(2, 4))


# ----------------------------------------------------------------------------------------------
# TRL adapter
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trl_grpo_adapter_trains_with_optimal_baseline_and_snr(tmp_path):
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    import transformers
    from trl import GRPOConfig

    from optforge.rl import make_oblr_grpo_trainer_class

    vocab = {str(i): i for i in range(10)} | {"<pad>": 10, "<eos>": 11, "<unk>": 12}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    cfg = transformers.LlamaConfig(
        vocab_size=13, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=10, eos_token_id=11,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg)
    ds = datasets.Dataset.from_dict({"prompt": ["1 2 3 4", "5 6 7 8", "0 0 1 2", "9 9 3 3"] * 2})
    seen = []

    def reward(completions, **kw):
        return [float(len(c.split()) % 2) for c in completions]

    cls = make_oblr_grpo_trainer_class()

    class Recording(cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen.append((out, self._oblr_rewards_per_func[:, 0].clone()))
            return out

    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=4, max_steps=3, report_to=[], use_cpu=True, learning_rate=1e-3,
        save_strategy="no", logging_steps=1, seed=0,
    )  # fmt: skip
    trainer = Recording(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
        baseline="optimal", norm_method="length", snr_lr=True,
    )  # fmt: skip
    trainer.train()
    assert seen
    for out, rewards in seen:  # the advantages are ours: length-weighted LOO, group-std scaled
        w = out["completion_mask"].sum(1).float()
        expected = advantages(rewards, 4, weights=w, scale_rewards="group")
        assert torch.allclose(out["advantages"].float(), expected, atol=1e-5)
    ctl = trainer.snr_callback.controller
    assert ctl is not None and 0.05 <= ctl.last_rho <= 1.0
    with pytest.raises(ValueError, match="norm_method"):
        cls(model=model, reward_funcs=reward, args=args, train_dataset=ds, norm_method="ghost")
