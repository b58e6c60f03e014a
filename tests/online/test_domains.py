"""Projections onto the online-learning domains are exact (spec optimistic_omd.md §7.3)."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from optforge.online import Ball, Box, Simplex, Unconstrained


def _spd(gen, d):
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def _slsqp(y, u, constraints, bounds=None):
    y, u = y.numpy(), u.numpy()
    res = minimize(
        lambda x: (x - y) @ u @ (x - y),
        np.zeros_like(y),
        jac=lambda x: 2 * u @ (x - y),
        constraints=constraints,
        bounds=bounds,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return torch.from_numpy(res.x), float(res.fun)


@pytest.mark.parametrize("domain", [Ball(1.5), Box(-0.5, torch.linspace(0.1, 1.0, 6)), Simplex(6)])
def test_projection_idempotent_nonexpansive_and_feasible(domain):
    gen = torch.Generator().manual_seed(0)
    y = 3 * torch.randn(200, 6, generator=gen, dtype=torch.float64)
    z = 3 * torch.randn(200, 6, generator=gen, dtype=torch.float64)
    py, pz = domain.project(y), domain.project(z)
    assert domain.contains(py, atol=1e-12)
    torch.testing.assert_close(domain.project(py), py, rtol=0, atol=1e-12)
    gap = torch.linalg.vector_norm(py - pz, dim=-1) - torch.linalg.vector_norm(y - z, dim=-1)
    assert float(gap.max()) <= 1e-12
    # variational inequality of the Euclidean projection: <y - Π(y), x - Π(y)> <= 0 for x in X
    assert float(((y - py) * (pz - py)).sum(-1).max()) <= 1e-10


def test_simplex_projection_matches_qp():
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        y = torch.randn(5, generator=gen, dtype=torch.float64)
        ref, _ = _slsqp(
            y,
            torch.eye(5, dtype=torch.float64),
            [{"type": "eq", "fun": lambda x: x.sum() - 1}],
            bounds=[(0, None)] * 5,
        )
        torch.testing.assert_close(Simplex(5).project(y), ref, rtol=0, atol=1e-6)


def test_points_inside_are_returned_unchanged():
    gen = torch.Generator().manual_seed(2)
    u = _spd(gen, 4)
    y = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)
    for domain in (Ball(1.0), Box(-1.0, 1.0), Unconstrained()):
        assert torch.equal(domain.project(y), y)
        assert torch.equal(domain.project(y, metric=u), y)


def test_metric_ball_projection_matches_slsqp():
    gen = torch.Generator().manual_seed(3)
    ball = Ball(0.7)
    for _ in range(8):
        u = _spd(gen, 5)
        y = 2 * torch.randn(5, generator=gen, dtype=torch.float64)
        ours = ball.project(y, metric=u)
        ref, fun = _slsqp(y, u, [{"type": "ineq", "fun": lambda x: 0.49 - x @ x}])
        assert float(torch.linalg.vector_norm(ours)) <= 0.7 + 1e-12
        our_fun = float((ours - y) @ u @ (ours - y))
        assert our_fun <= fun + 1e-9 * max(1.0, fun)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_metric_ball_projection_batched_equals_loop():
    gen = torch.Generator().manual_seed(4)
    u = torch.stack([_spd(gen, 3) for _ in range(4)])
    y = 3 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y[1] = 0.1  # one point already inside
    batched = Ball(1.0).project(y, metric=u)
    looped = torch.stack([Ball(1.0).project(y[i], metric=u[i]) for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-12)
    assert torch.equal(batched[1], y[1])


def test_metric_box_projection_matches_slsqp():
    gen = torch.Generator().manual_seed(5)
    box = Box(-0.5, 0.5)
    for _ in range(5):
        u = _spd(gen, 4)
        y = 2 * torch.randn(4, generator=gen, dtype=torch.float64)
        ref, _ = _slsqp(y, u, [], bounds=[(-0.5, 0.5)] * 4)
        torch.testing.assert_close(box.project(y, metric=u), ref, rtol=0, atol=1e-6)


def test_ball_with_center_and_diameters():
    center = torch.tensor([1.0, 1.0], dtype=torch.float64)
    ball = Ball(1.0, center=center)
    x = ball.project(torch.tensor([4.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(x, torch.tensor([1.6, 1.8], dtype=torch.float64))
    assert ball.diameter == 2.0
    box = Box(-1.0, 1.0)
    box.check_dim(4)
    assert box.diameter == pytest.approx(4.0)
    assert Simplex(3).diameter == pytest.approx(2**0.5)


def test_bad_domain_arguments():
    with pytest.raises(ValueError, match="radius"):
        Ball(0.0)
    with pytest.raises(ValueError, match="upper"):
        Box(1.0, -1.0)
    with pytest.raises(ValueError, match="dim"):
        Simplex(0)
    with pytest.raises(ValueError, match="metric"):
        Ball(1.0).project(torch.ones(3) * 5, metric=torch.eye(2))
    with pytest.raises(NotImplementedError):
        Simplex(3).project(torch.ones(3), metric=torch.eye(3))


def test_domain_and_learner_bases_are_abstract():
    from optforge.online.domains import Domain
    from optforge.online.learners import OnlineLearner

    with pytest.raises(TypeError, match="abstract"):
        Domain()
    with pytest.raises(TypeError, match="abstract"):
        OnlineLearner()
