"""Optimistic ONS against a slow SLSQP reference, and the original ONS (online.learners.ons)."""

import numpy as np
import pytest
import torch
from _online_helpers import _grads, _play, _zeros
from scipy.optimize import minimize

from optforge.online import (
    OGD,
    ONS,
    Ball,
    OptimisticONS,
    run_online,
    sea_least_squares,
)


def _ons_reference(x0, grads, beta, delta, radius, outer="grad"):
    """Slow optimistic ONS: numpy + SLSQP for every Mahalanobis projection."""

    def proj(y, u):
        if np.linalg.norm(y) <= radius:
            return y
        res = minimize(
            lambda x: (x - y) @ u @ (x - y),
            y * radius / np.linalg.norm(y),
            jac=lambda x: 2 * u @ (x - y),
            constraints=[{"type": "ineq", "fun": lambda x: radius**2 - x @ x}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        return res.x

    d = len(x0)
    u, xhat, hint, xs = delta * np.eye(d), x0.copy(), np.zeros(d), []
    for g in grads:
        xs.append(proj(xhat - np.linalg.solve(u, hint), u))
        xhat = proj(xhat - np.linalg.solve(u, g), u)
        v = g if outer == "grad" else g - hint
        u = u + 0.5 * beta * np.outer(v, v)
        hint = g
    return np.array(xs)


@pytest.mark.parametrize("outer", ["grad", "diff"])
def test_optimistic_ons_matches_slsqp_reference(outer):
    grads = _grads(n=15, d=3, scale=3.0)
    learner = OptimisticONS(
        _zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=1.0, delta=0.5, outer=outer
    )
    xs = _play(learner, grads)
    ref = _ons_reference(np.zeros(3), grads.numpy(), learner.beta, 0.5, 0.5, outer)
    assert float(torch.linalg.vector_norm(xs, dim=-1).max()) > 0.49  # projections were active
    np.testing.assert_allclose(xs.numpy(), ref, rtol=0, atol=1e-6)


def test_ons_with_large_delta_is_ogd():
    grads = _grads(n=20, d=3, scale=0.5)
    delta = 1e7
    ons = OptimisticONS(
        _zeros(3), Ball(1.0), exp_concavity=1.0, grad_bound=1.0, delta=delta, hint="zero"
    )
    ogd = OGD(_zeros(3), Ball(1.0), step="fixed", lr=1 / delta)
    torch.testing.assert_close(_play(ons, grads), _play(ogd, grads), rtol=1e-5, atol=1e-12)
    classic = ONS(_zeros(3), Ball(1.0), exp_concavity=1.0, grad_bound=1.0, delta=delta)
    ogd2 = OGD(_zeros(3), Ball(1.0), step="fixed", lr=1 / (delta * classic.beta))
    torch.testing.assert_close(_play(classic, grads), _play(ogd2, grads), rtol=1e-5, atol=1e-12)


def test_optimistic_ons_default_delta_is_ons_regulariser():
    """δ = 1/(βD²): ONS's metric β·A_0 = βεI with ε = 1/(β²D²); raised to 4L for large L."""
    kw = {"exp_concavity": 0.25, "grad_bound": 2.0}
    ons = ONS(_zeros(5), Ball(1.0), **kw)
    opt = OptimisticONS(_zeros(5), Ball(1.0), smoothness=1.0, **kw)
    assert opt.beta == ons.beta == pytest.approx(1 / 32)
    assert opt.delta == pytest.approx(ons.beta * ons.delta) == pytest.approx(8.0)
    assert OptimisticONS(_zeros(5), Ball(1.0), **kw).delta == pytest.approx(8.0)
    assert OptimisticONS(_zeros(5), Ball(1.0), smoothness=10.0, **kw).delta == 40.0
    torch.testing.assert_close(opt.metric, 8.0 * torch.eye(5, dtype=torch.float64))


def test_optimistic_ons_default_not_worse_than_ons_on_switching_least_squares():
    """Before the fix (δ = 1 + 8L/β = 257) optimistic ONS barely moved: regret ≈ +1.4 vs −9."""
    stream = sea_least_squares("switch", dim=5, horizon=500, sigma=0.1, period=100, seed=0)
    kw = {"exp_concavity": 0.25, "grad_bound": 2.0}
    ons = run_online(ONS(_zeros(5), Ball(1.0), **kw), stream, checkpoints=[500])
    opt = run_online(
        OptimisticONS(_zeros(5), Ball(1.0), smoothness=1.0, **kw), stream, checkpoints=[500]
    )
    assert float(ons["static_regret"]) < -5.0
    assert float(opt["static_regret"]) <= float(ons["static_regret"])
