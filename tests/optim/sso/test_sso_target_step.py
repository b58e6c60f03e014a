"""Tests of SSO's target step η_t: target-space line search, AdaGrad-norm, schedules."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optforge.optim.sso import SSO, target_gradient

D64 = torch.float64


def test_target_line_search_satisfies_armijo_in_target_space(mlp):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(40, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 3, (40,), generator=gen)
    model = mlp()
    opt = SSO(model.parameters(), target_lr=50.0, target_line_search=True, inner_steps=3)

    def target_loss(z):
        return F.cross_entropy(z, y)

    for t in range(6):
        z_t = model(x).detach()
        g = target_gradient(target_loss, z_t)
        opt.step(forward=lambda: model(x), target_loss=target_loss)
        eta = opt.state[next(model.parameters())]["eta"]
        assert 1e-4 <= eta <= 1e4
        step = eta * x.shape[0]  # η / w with w = 1/b
        lhs = float(target_loss(z_t - step * g))
        rhs = float(target_loss(z_t)) - 0.5 * step * float((g**2).sum())
        assert lhs <= rhs + 1e-12
        if t == 0:
            assert eta < 50.0  # the first η had to shrink
    assert opt.counters["target_loss_evals"] >= 6


def test_adagrad_norm_target_step_closed_form():
    model = nn.Linear(4, 2).to(D64)
    x = torch.randn(10, 4, dtype=D64)
    gen = torch.Generator().manual_seed(11)
    grads = [torch.randn(10, 2, generator=gen, dtype=D64) for _ in range(5)]
    opt = SSO(model.parameters(), target_lr=0.5, adaptive="adagrad_norm", inner_steps=2)
    total = 0.0
    for g in grads:
        assert opt.step(forward=lambda: model(x), target_grad=g) is None
        total += float((g**2).sum()) * 10  # w‖G_pe‖² = ‖Ĝ‖²/w with w = 1/b
        expected = 1.0 / (math.sqrt(total) / 0.5 + 1e-6)
        assert opt.state[next(model.parameters())]["eta"] == pytest.approx(expected, rel=1e-12)


def test_schedules_match_their_formulas():
    model = nn.Linear(3, 1).to(D64)
    x = torch.randn(8, 3, dtype=D64)
    for schedule, formula in [
        ("constant", lambda t: 2.0),
        ("sqrt", lambda t: 2.0 / math.sqrt(t)),
        ("exp", lambda t: 2.0 * 7.0 ** (-t / 7.0)),
    ]:
        opt = SSO(
            model.parameters(), target_lr=2.0, schedule=schedule, total_steps=7, inner_steps=1
        )
        for t in range(1, 10):
            assert opt.target_step() == pytest.approx(formula(t), rel=1e-12)
            opt.step(forward=lambda: x @ model.weight.T, target_grad=torch.ones(8, 1, dtype=D64))
            assert opt.state[model.weight]["eta"] == pytest.approx(formula(t), rel=1e-12)
    with pytest.raises(ValueError, match="total_steps"):
        SSO(model.parameters(), schedule="exp")
