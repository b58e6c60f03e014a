"""Tests for optforge.rl.snr_lr: the step-size theorem and the SNR learning-rate controller."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optforge.rl import SNRLearningRate


def test_snr_step_size_maximises_quadratic_bound():
    for g2, s2, lip in [(1.0, 3.0, 2.0), (0.2, 0.01, 10.0), (5.0, 50.0, 0.5)]:
        snr = g2 / s2
        eta_star = snr / (1 + snr) / lip
        etas = torch.linspace(0, 2 / lip, 200001, dtype=torch.float64)
        gain = etas * g2 - lip * etas.pow(2) / 2 * (g2 + s2)
        assert etas[gain.argmax()].item() == pytest.approx(eta_star, abs=2e-5 / lip)
        assert gain.max().item() == pytest.approx(g2**2 / (2 * lip * (g2 + s2)), rel=1e-6)


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


def test_per_sample_units_underestimate_noise_when_samples_share_a_prompt():
    """g_kj = μ + u_k + ε_kj (B prompts × G responses): prompt units recover ρ, samples do not."""
    opt, params = _opt()
    d, b, g, s_prompt, s_resp = 100, 16, 8, 0.3, 0.5
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(d, generator=gen, dtype=torch.float64) * 0.05
    noise = (s_prompt**2 + s_resp**2 / g) * d / b  # tr Cov(ḡ)
    target = mu.pow(2).sum() / (mu.pow(2).sum() + noise)
    per_prompt = SNRLearningRate(opt, beta=0.9, rho_min=1e-4)
    per_sample = SNRLearningRate(opt, beta=0.9, rho_min=1e-4)
    rhos = {"prompt": [], "sample": []}
    for _ in range(400):
        u = s_prompt * torch.randn(b, 1, d, generator=gen, dtype=torch.float64)
        g_kj = mu + u + s_resp * torch.randn(b, g, d, generator=gen, dtype=torch.float64)
        gbar = g_kj.mean((0, 1))
        params[0].grad, params[1].grad = gbar[:50].float(), gbar[50:].float()
        rhos["prompt"].append(per_prompt.update_from_microbatches(g_kj.mean(1).pow(2).sum(1)))
        rhos["sample"].append(per_sample.update_from_per_sample(g_kj.pow(2).sum(), b * g))
    est = {k: sum(v[100:]) / 300 for k, v in rhos.items()}
    assert est["prompt"] == pytest.approx(target.item(), rel=0.1)
    assert est["sample"] > 1.5 * target.item()  # the prompt-level noise is divided by N, not B


def test_snr_bad_inputs_name_the_argument_and_change_nothing():
    opt, params = _opt()
    ctl = SNRLearningRate(opt)
    params[0].grad, params[1].grad = torch.full((50,), 0.1), torch.full((50,), 0.1)
    before = ctl.state_dict()
    bad = [
        (lambda: ctl.update_from_per_sample(3.0, 8, mean_grad_sqnorm=-1), "mean_grad_sqnorm"),
        (lambda: ctl.update_from_per_sample(3.0, 8, mean_grad_sqnorm=float("nan")),
         "mean_grad_sqnorm"),
        (lambda: ctl.update_from_per_sample(3.0, 4.0), "n must be an integer"),
        (lambda: ctl.update_from_per_sample(3.0, True), "n must be an integer"),
        (lambda: ctl.update_from_per_sample(3.0, 1), "n must be an integer >= 2"),
        (lambda: ctl.update_from_per_sample(-1.0, 8), "sum_sq_per_sample"),
        (lambda: ctl.update_from_per_sample(float("inf"), 8), "sum_sq_per_sample"),
        (lambda: ctl.update_from_per_sample(torch.ones(3), 8), "sum_sq_per_sample"),
        (lambda: ctl.update_from_per_sample("3", 8), "sum_sq_per_sample"),
        (lambda: ctl.update_from_microbatches([1.0, float("nan")]), "microbatch_grad_sqnorms"),
        (lambda: ctl.update_from_microbatches([1.0, -2.0]), "microbatch_grad_sqnorms"),
        (lambda: ctl.update_from_microbatches(torch.ones(2, 2)), "microbatch_grad_sqnorms"),
        (lambda: ctl.update_from_microbatches(["a", "b"]), "microbatch_grad_sqnorms"),
        (lambda: ctl.update_from_microbatches([1.0, 2.0], mean_grad_sqnorm=-0.5),
         "mean_grad_sqnorm"),
        (lambda: ctl.update_from_microbatches_sum(3.0, 2.5), "k must be an integer"),
        (lambda: ctl.load_state_dict({"beta": 0.5}), "state_dict"),
        (lambda: ctl.load_state_dict({**before, "base_lrs": [0.1]}), "base_lrs"),
        (lambda: ctl.load_state_dict({**before, "beta": 1.5}), "beta"),
        (lambda: ctl.load_state_dict({**before, "grad_ema": [torch.zeros(3)]}), "grad_ema"),
    ]  # fmt: skip
    for call, match in bad:
        with pytest.raises((ValueError, TypeError), match=match):
            call()
    assert repr(ctl.state_dict()) == repr(before)  # nothing changed before the raise
    params[0].grad = torch.full((50,), float("nan"))
    from optforge._core import NonFiniteError

    with pytest.raises(NonFiniteError, match="gradient"):
        ctl.update_from_gradient()
    with pytest.raises(NonFiniteError, match="gradient"):
        ctl.update_from_per_sample(3.0, 8)
    assert repr(ctl.state_dict()) == repr(before)
    for kwargs, match in [
        ({"lr_max": float("nan")}, "lr_max"),
        ({"beta": -0.1}, "beta"),
        ({"rho_max": float("inf")}, "rho_max"),
        ({"lr_max": "1"}, "lr_max"),
    ]:
        with pytest.raises(ValueError, match=match):
            SNRLearningRate(opt, **kwargs)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="lr"):
        SNRLearningRate(opt)
