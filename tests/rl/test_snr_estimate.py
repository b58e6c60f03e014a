"""The trainer's SNR estimate: per-prompt units, checked by Monte Carlo against a frozen policy.

The G responses of a prompt share the prompt, so their gradient terms are correlated; the
independent units of a batch are its B prompts. The noise of the batch gradient ḡ is therefore
estimated from the B per-prompt gradients (ghost norms of prompt-grouped sums, or one backward
per prompt). Treating the N = B·G samples as independent under-estimates it.
"""

from __future__ import annotations

import math

import pytest
import torch
from _rl_helpers import _batch, _tiny

from optforge.func import GhostNormRecorder
from optforge.rl import OBLRPOTrainer, SNRLearningRate, score_sqnorms, token_logprobs
from optforge.rl.score_norms import GhostScoreGradients


def _reward(prompt_ids, response_ids):
    target = (prompt_ids[:, -1:] + torch.arange(1, response_ids.shape[1] + 1)) % 10
    return (response_ids == target).float().mean(1)


def test_ghost_grouped_sqnorms_equal_autograd():
    """||Σ_{j∈k} a_j ∇ seq_j||² per group equals the brute-force autograd value."""
    model = _tiny(3)
    ids, attn, resp = _batch(n=6)
    a = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.3])
    with GhostNormRecorder.for_model(model) as rec:
        seq = (token_logprobs(model, ids, attn) * resp).sum(1)
    grads = GhostScoreGradients(rec, seq, retain_graph=True)
    params = list(model.parameters())
    for group in (1, 2, 3, 6):
        expected = []
        for k in range(6 // group):
            rows = slice(k * group, (k + 1) * group)
            g = torch.autograd.grad((a[rows] * seq[rows]).sum(), params, retain_graph=True)
            expected.append(sum(float(t.double().pow(2).sum()) for t in g))
        got = grads.sqnorms(weights=a, group_size=group)
        assert got.tolist() == pytest.approx(expected, rel=1e-4)
    exact = score_sqnorms(model, ids, attn, resp, method="exact")
    assert grads.sqnorms().tolist() == pytest.approx(exact.tolist(), rel=1e-4)
    with pytest.raises(ValueError, match="group_size"):
        grads.sqnorms(group_size=4)
    with pytest.raises(ValueError, match="weights"):
        grads.sqnorms(weights=torch.ones(5))


def _frozen_noise_run(model, units, *, n_batches, prompts=8, group=12, seed=3):
    """Batch gradients and the trainer's noise estimates at a frozen policy (params restored)."""
    sgd = torch.optim.SGD(model.parameters(), lr=1e-3)
    snr = SNRLearningRate(sgd, beta=0.0, rho_min=1e-6)
    kw = {} if units is None else {"snr_units": units}
    trainer = OBLRPOTrainer(
        model, _reward, sgd, group_size=group, baseline="optimal", snr_lr=snr,
        max_new_tokens=4, generator=torch.Generator().manual_seed(seed), **kw,
    )  # fmt: skip
    params = list(model.parameters())
    frozen = [p.detach().clone() for p in params]
    prompt_gen = torch.Generator().manual_seed(seed + 1)
    grads, noise = [], []
    for _ in range(n_batches):
        trainer.step(torch.randint(10, (prompts, 4), generator=prompt_gen))
        grads.append(torch.cat([p.grad.flatten() for p in params]).double())
        noise.append(snr.last_noise)
        with torch.no_grad():  # freeze the policy: every batch is drawn from the same one
            for p, p0 in zip(params, frozen, strict=True):
                p.copy_(p0)
    return torch.stack(grads), torch.tensor(noise, dtype=torch.float64)


def _z_score(grads, noise):
    """(mean estimated noise − tr Cov(ḡ)) / its standard error (jackknife over batches)."""
    m = grads.shape[0]
    true = float(grads.var(0).sum())
    total, total_sq = grads.sum(0), grads.pow(2).sum(0)
    loo = [  # leave-one-out trace of the covariance, from running sums
        float(((total_sq - g.pow(2)) - (total - g).pow(2) / (m - 1)).sum() / (m - 2)) for g in grads
    ]
    loo_t = torch.tensor(loo, dtype=torch.float64)
    se_true = math.sqrt((m - 1) / m * float((loo_t - loo_t.mean()).pow(2).sum()))
    se_est = float(noise.std()) / math.sqrt(m)
    est = float(noise.mean())
    return est / true, (est - true) / math.hypot(se_true, se_est)


@pytest.mark.slow
def test_default_snr_noise_is_unbiased_at_a_frozen_policy():
    """Monte Carlo: the default noise estimate matches tr Cov(ḡ); per-sample units fall short."""
    model = _tiny(0, n_layers=1, d_model=16, d_mlp=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    warm = OBLRPOTrainer(
        model, _reward, opt, group_size=8, baseline="group_mean", scale_rewards="group",
        max_new_tokens=4, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    prompt_gen = torch.Generator().manual_seed(2)
    for _ in range(30):  # mid-training (reward ≈ 0.35): prompts pull in different directions
        reward = warm.step(torch.randint(10, (16, 4), generator=prompt_gen))["reward_mean"]
    assert reward > 0.2

    ratio, z = _z_score(*_frozen_noise_run(model, None, n_batches=80))
    assert abs(z) < 4.0, f"default estimate / true noise = {ratio:.3f} (z = {z:.2f})"
    ratio_s, z_s = _z_score(*_frozen_noise_run(model, "sample", n_batches=80))
    assert ratio_s < 0.85 and z_s < -4.0, (ratio_s, z_s)  # per-sample units: biased low


def test_prompt_units_agree_between_ghost_and_microbatches():
    """One backward per prompt (exact norms) gives the same estimate as the ghost route."""
    prompts = torch.randint(10, (3, 4), generator=torch.Generator().manual_seed(7))
    out = []
    for norm in ("ghost", "exact"):
        model = _tiny(0, n_layers=1, d_model=16, d_mlp=16)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        snr = SNRLearningRate(opt, beta=0.0, rho_min=1e-6)
        trainer = OBLRPOTrainer(
            model, _reward, opt, group_size=4, norm_method=norm, snr_lr=snr,
            max_new_tokens=3, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        trainer.step(prompts)
        out.append((snr.last_signal, snr.last_noise))
    assert out[0] == pytest.approx(out[1], rel=1e-4)
    assert out[0][1] > 0


def test_snr_units_validation():
    model = _tiny(0, n_layers=1, d_model=16, d_mlp=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snr = SNRLearningRate(opt)
    with pytest.raises(ValueError, match="snr_units"):
        OBLRPOTrainer(model, _reward, opt, snr_lr=snr, snr_units="token", max_new_tokens=2)
    with pytest.raises(ValueError, match="exact per-sample norms"):
        OBLRPOTrainer(
            model, _reward, opt, snr_lr=snr, snr_units="sample", norm_method="logit",
            max_new_tokens=2,
        )  # fmt: skip
    with pytest.raises(ValueError, match="snr_microbatches"):
        OBLRPOTrainer(
            model, _reward, opt, snr_lr=snr, snr_units="sample", snr_microbatches=2,
            max_new_tokens=2,
        )  # fmt: skip
