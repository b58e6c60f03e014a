"""Tests of one regularized Newton step and its solvers (Cholesky, CG, Sherman–Morrison, metric)."""

import math

import pytest
import torch

from optforge.optim import regularized_newton_step
from optforge.optim.hessian_approx import RankOne
from optforge.optim.regularized_newton.step import _Metric

DT = torch.float64


@pytest.mark.parametrize("solver", ["cholesky", "cg", "auto"])
@pytest.mark.parametrize("with_metric", [False, True])
def test_step_formula_dense(solver, with_metric, spd):
    d = 12
    H, B = spd(d, 0, shift=0.0), spd(d, 1)
    g = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=DT)
    lam = 0.37
    metric = B if with_metric else None
    expected = -torch.linalg.solve(H + lam * (B if with_metric else torch.eye(d, dtype=DT)), g)
    step = regularized_newton_step(H, g, lam, metric=metric, solver=solver)
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["sherman_morrison", "cholesky", "cg"])
def test_step_formula_rank_one(solver, spd):
    d = 9
    gen = torch.Generator().manual_seed(3)
    u, g = torch.randn(d, generator=gen, dtype=DT), torch.randn(d, generator=gen, dtype=DT)
    alpha, lam, B = torch.tensor(2.5, dtype=DT), 0.2, spd(d, 4)
    expected = -torch.linalg.solve(alpha * torch.outer(u, u) + lam * B, g)
    step = regularized_newton_step(RankOne(u, alpha), g, lam, metric=B, solver=solver)
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)


def test_step_indefinite_raises():
    with pytest.raises(RuntimeError, match="positive definite"):
        regularized_newton_step(-torch.eye(3, dtype=DT), torch.ones(3, dtype=DT), 0.5)


def test_newton_limit_when_lambda_small(lse_problem):
    """With the exact Hessian and λ → 0 the step is Newton's step."""
    _A, _b, _mu, f = lse_problem()
    x = torch.full((20,), 0.3, dtype=DT)
    H, g = torch.func.hessian(f)(x), torch.func.grad(f)(x)
    H = H + 1e-3 * torch.eye(20, dtype=DT)  # LSE's Hessian is singular along 1-directions
    newton = -torch.linalg.solve(H, g)
    torch.testing.assert_close(regularized_newton_step(H, g, 1e-12), newton, rtol=1e-8, atol=1e-9)
    far = regularized_newton_step(H, g, 1e3)
    assert torch.linalg.vector_norm(far - newton) > 0.5 * torch.linalg.vector_norm(newton)


def test_dual_norm_uses_metric_inverse(spd):
    B = spd(6, 13)
    g = torch.randn(6, dtype=DT)
    expected = float(torch.sqrt(g @ torch.linalg.inv(B) @ g))
    assert math.isclose(
        _Metric(B, 6, DT, torch.device("cpu")).dual_norm(g), expected, rel_tol=1e-12
    )
