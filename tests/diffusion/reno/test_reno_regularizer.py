"""The chi-norm regulariser: closed form and gradient, minimum at sqrt(d - 1), concentration,
float16."""

import math

import numpy as np
import torch
from _reno_helpers import _identity, _quadratic_reward
from scipy import stats

from optforge.diffusion.reno import chi_norm_nll, reno


def test_chi_norm_nll_closed_form_and_gradient():
    z = torch.randn(3, 4, 5, dtype=torch.float64)
    r = z.flatten(1).norm(dim=1)
    d = 20
    expected = 0.5 * r**2 - (d - 1) * torch.log(r)
    torch.testing.assert_close(chi_norm_nll(z), expected)
    torch.testing.assert_close(chi_norm_nll(z, reduction="sum"), expected.sum())
    torch.testing.assert_close(chi_norm_nll(z, reduction="mean"), expected.mean())
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(chi_norm_nll(zz).sum(), zz)
    torch.testing.assert_close(g, z * (1 - (d - 1) / r**2).view(-1, 1, 1))
    assert torch.autograd.gradcheck(lambda t: chi_norm_nll(t), (zz,))


def test_chi_norm_nll_minimum_at_sqrt_d_minus_1_and_is_chi_nll():
    d = 50
    u = torch.randn(1, d, dtype=torch.float64)
    u = u / u.norm()
    scales = torch.linspace(1.0, 15.0, 14001, dtype=torch.float64)
    values = torch.stack([chi_norm_nll(s * u)[0] for s in scales])
    s_best = scales[values.argmin()]
    assert abs(float(s_best) - math.sqrt(d - 1)) < 2e-3
    # differs from -log chi(d).pdf(r) by a constant
    radii = np.array([2.0, 5.0, 7.0, 11.0])
    ours = np.array([float(chi_norm_nll(r * u)[0]) for r in radii])
    diff = ours + stats.chi(d).logpdf(radii)
    np.testing.assert_allclose(diff, diff[0], rtol=0, atol=1e-9)


def test_chi_norm_nll_monte_carlo_concentration():
    g = torch.Generator().manual_seed(0)
    d = 16384
    z = torch.randn(8, d, generator=g)
    ratio = z.norm(dim=1) / math.sqrt(d - 1)
    assert ((ratio > 0.98) & (ratio < 1.02)).all()
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(chi_norm_nll(zz).sum(), zz)
    assert (grad.norm(dim=1) < 0.05 * z.norm(dim=1)).all()
    z2 = torch.randn(1000, 2, generator=g)
    assert torch.isfinite(chi_norm_nll(z2)).all()


def test_chi_norm_nll_fp16_is_finite():
    """Regression for the reference code's -inf in half precision (official issue #4)."""
    z = (torch.randn(2, 4, 64, 64) * 1.0).half().requires_grad_(True)
    value = chi_norm_nll(z)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert torch.isfinite(grad).all()
    # a full fp16 ReNO run stays finite
    target = torch.zeros(2, 4, 64, 64, dtype=torch.float16)
    res = reno(_identity, _quadratic_reward(target), None, z.detach(), n_iters=3, lr=1.0)
    assert torch.isfinite(res.best_noise).all() and res.best_noise.dtype == torch.float16
