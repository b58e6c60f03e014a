"""Projection onto the perturbation budget (optforge.data.bayes_error.budget)."""

import pytest
import torch

from optforge.data.bayes_error import project_perturbation


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_keeps_budget_and_box(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 6, generator=g)
    delta = 3 * torch.randn(50, 6, generator=g)
    p = project_perturbation(delta, x, 0.2, norm)
    size = p.abs().amax(1) if norm == "linf" else p.norm(dim=1)
    assert float(size.max()) <= 0.2 + 1e-6
    assert float((x + p).min()) >= 0 and float((x + p).max()) <= 1
    if norm == "linf":  # exact projection: idempotent and = clip of the box-and-ball interval
        torch.testing.assert_close(project_perturbation(p, x, 0.2, norm), p)
        lo = torch.maximum(-x, torch.full_like(x, -0.2))
        hi = torch.minimum(1 - x, torch.full_like(x, 0.2))
        torch.testing.assert_close(p, torch.minimum(torch.maximum(delta, lo), hi))
