"""Tests of SSO's target-space surrogate: tight at the snapshot, an upper bound for η ≤ 1/L."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from optforge.optim.sso import TargetSurrogateLoss, target_gradient

D64 = torch.float64


def _squared(y):
    return lambda z: 0.5 * ((z - y) ** 2).sum(-1).mean(-1)


def _logistic(y):
    return lambda z: F.binary_cross_entropy_with_logits(z, y.expand_as(z), reduction="none").mean(
        (-1, -2)
    )


def _softmax_ce(y):
    def loss(z):
        return -(torch.log_softmax(z, -1).gather(-1, y.expand(*z.shape[:-1], 1))).mean((-1, -2))

    return loss


def test_surrogate_tight_with_same_gradient_at_snapshot(mlp):
    model = mlp()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 3, (16,), generator=gen)
    z_t = model(x).detach()
    loss_t = F.cross_entropy(z_t, y)
    grad = target_gradient(lambda z: F.cross_entropy(z, y), z_t)
    surrogate = TargetSurrogateLoss(z_t, grad, eta=0.7, loss_t=loss_t)
    value = surrogate(model(x))
    assert float(value.detach()) == pytest.approx(float(loss_t), abs=1e-12)
    g_sur = torch.autograd.grad(surrogate(model(x)), list(model.parameters()))
    g_loss = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for a, b in zip(g_sur, g_loss, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def _max_violation(model, x, y_loss, eta, n=200, radius=0.5):
    """max over random θ near θ_t of h(θ) − g(θ) (positive means the bound fails)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    z_t = functional_call(model, params, (x,))
    loss_t = y_loss(z_t)
    grad = target_gradient(y_loss, z_t)
    gen = torch.Generator().manual_seed(2)
    batch = {
        k: v + radius * torch.randn(n, *v.shape, generator=gen, dtype=D64)
        for k, v in params.items()
    }
    z = vmap(lambda p: functional_call(model, p, (x,)))(batch)  # (n, b, p)
    h = y_loss(z)
    diff = z - z_t
    w = 1.0 / x.shape[0]
    g = loss_t + (grad * diff).sum((-1, -2)) + w / (2 * eta) * (diff**2).sum((-1, -2))
    return float((h - g).max())


@pytest.mark.parametrize("arch", ["linear", "mlp"])
@pytest.mark.parametrize(
    "loss_name,smoothness", [("squared", 1.0), ("logistic", 0.25), ("ce", 0.5)]
)
def test_surrogate_upper_bounds_loss_at_eta_one_over_l(arch, loss_name, smoothness, mlp):
    gen = torch.Generator().manual_seed(3)
    out = 1 if loss_name == "logistic" else 3
    model = nn.Linear(5, out).to(D64) if arch == "linear" else mlp(d_out=out)
    x = torch.randn(20, 5, generator=gen, dtype=D64)
    if loss_name == "squared":
        loss = _squared(torch.randn(20, 3, generator=gen, dtype=D64))
    elif loss_name == "logistic":
        loss = _logistic(torch.randint(0, 2, (20, 1), generator=gen).to(D64))
    else:
        loss = _softmax_ce(torch.randint(0, 3, (20, 1), generator=gen))
    assert _max_violation(model, x, loss, eta=1.0 / smoothness) <= 1e-10


def test_surrogate_bound_fails_for_too_large_eta():
    """Negative control: η = 4/L for the squared loss is not an upper bound."""
    gen = torch.Generator().manual_seed(3)
    model = nn.Linear(5, 3).to(D64)
    x = torch.randn(20, 5, generator=gen, dtype=D64)
    loss = _squared(torch.randn(20, 3, generator=gen, dtype=D64))
    assert _max_violation(model, x, loss, eta=4.0) > 1e-3
