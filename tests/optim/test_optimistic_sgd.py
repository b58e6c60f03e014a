"""OptimisticSGD: the conformance suite, the OGDA recursion and a bilinear game."""

import pytest
import torch

from optforge.online import OptimisticOGD, Unconstrained
from optforge.optim import OptimisticSGD
from optforge.testing import ConvergenceSettings, check_optimizer


@pytest.mark.slow
def test_conformance():
    check_optimizer(
        lambda params, lr=0.02, **kw: OptimisticSGD(params, lr=lr, **kw),
        quadratic=ConvergenceSettings(steps=1500, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=20_000, tol=1e-2, hyperparams={"lr": 1.3e-3}),
        bad_hyperparams={"lr": -1.0, "optimism": -0.5},
    )


def test_matches_the_online_learner_and_the_recursion():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    h, c = (
        a @ a.T / 5 + torch.eye(5, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = OptimisticSGD([p], lr=0.05)
    learner = OptimisticOGD(
        torch.zeros(5, dtype=torch.float64), Unconstrained(), step="fixed", lr=0.05
    )
    prev = torch.zeros(5, dtype=torch.float64)
    for _ in range(30):
        x = learner.predict()
        torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-13)
        g = h @ x - c
        learner.update(g)
        before = p.detach().clone()
        opt.zero_grad()
        (0.5 * p @ h @ p - c @ p).backward()
        opt.step()
        torch.testing.assert_close(p.detach(), before - 0.05 * (2 * g - prev), rtol=0, atol=1e-13)
        prev = g


def _bilinear(optimizer_cls, steps=2000, **kw):
    x = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    y = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = optimizer_cls([{"params": [x]}, {"params": [y], "maximize": True}], lr=0.1, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (x * y).sum().backward()
        opt.step()
    return float(torch.hypot(x.detach(), y.detach()).squeeze())


def test_bilinear_game_converges_where_gda_diverges():
    assert _bilinear(OptimisticSGD) < 1e-3
    assert _bilinear(OptimisticSGD, optimism=0.0) > 10.0  # plain simultaneous GDA spirals out
    assert _bilinear(torch.optim.SGD) > 10.0


def test_rejects_bad_hyperparameters():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        OptimisticSGD(p, lr=0.0)
    with pytest.raises(ValueError, match="optimism"):
        OptimisticSGD(p, lr=0.1, optimism=float("nan"))
