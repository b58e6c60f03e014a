"""Quadratic models for cDSM's model search: exact fits, interpolation, box minimisation."""

import itertools

import torch

from optforge.dfo.quadratic_model import fit_quadratic, minimize_quadratic_in_box, model_value

F64 = torch.float64


def _random_quadratic(n, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=F64)
    return torch.randn(n, generator=gen, dtype=F64), a + a.T


def test_least_squares_fit_recovers_a_quadratic_exactly():
    n = 4
    g, h = _random_quadratic(n, 0)
    s = torch.randn(40, n, generator=torch.Generator().manual_seed(1), dtype=F64)  # > 15 = p
    fit_g, fit_h = fit_quadratic(s, model_value(g, h, s) + 3.0, scale=0.7)
    torch.testing.assert_close(fit_g, g)
    torch.testing.assert_close(fit_h, h)


def test_minimum_frobenius_fit_interpolates_and_is_exact_on_linear_functions():
    n = 6
    s = torch.randn(12, n, generator=torch.Generator().manual_seed(2), dtype=F64)  # n+1 <= 12 < 28
    g, h = _random_quadratic(n, 3)
    f = model_value(g, h, s)
    fit_g, fit_h = fit_quadratic(s, f, scale=1.0)
    c = (f - model_value(fit_g, fit_h, s)).mean()
    torch.testing.assert_close(model_value(fit_g, fit_h, s) + c, f)  # interpolation
    lin_g, lin_h = fit_quadratic(s, s @ g, scale=1.0)  # a linear function: H = 0
    torch.testing.assert_close(lin_g, g)
    assert lin_h.abs().max() < 1e-8
    assert fit_quadratic(s[:n], f[:n], scale=1.0) is None  # fewer than n + 1 points


def test_box_minimiser_newton_inside_and_grid_optimum_on_the_boundary():
    h = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    g = torch.tensor([-0.3, 0.2], dtype=F64)
    newton = torch.linalg.solve(h, -g)
    torch.testing.assert_close(minimize_quadratic_in_box(g, h, 1.0), newton)
    # a small box cuts the Newton step: compare with a fine grid
    radius = 0.1
    s = minimize_quadratic_in_box(g, h, radius, iters=500)
    grid = torch.linspace(-radius, radius, 201, dtype=F64)
    pts = torch.tensor(list(itertools.product(grid.tolist(), grid.tolist())), dtype=F64)
    assert s.abs().max() <= radius + 1e-12
    assert model_value(g, h, s) <= model_value(g, h, pts).min() + 1e-9
    # an indefinite model goes to the boundary, never increases the model
    h_ind = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))
    s = minimize_quadratic_in_box(torch.zeros(2, dtype=F64) + 1e-3, h_ind, 0.5)
    assert abs(float(s[1])) == 0.5 and model_value(torch.zeros(2, dtype=F64) + 1e-3, h_ind, s) < 0
