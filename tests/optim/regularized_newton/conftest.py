"""Shared problems of the gradient-regularized Newton tests, as fixtures returning factories."""

import pytest
import torch

DT = torch.float64


def _spd(d, seed, shift=0.1):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=gen, dtype=DT)
    return m @ m.T / d + shift * torch.eye(d, dtype=DT)


def _lse_problem(m=40, n=20, mu=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = 2 * torch.rand(m, n, generator=gen, dtype=DT) - 1
    b = 2 * torch.rand(m, generator=gen, dtype=DT) - 1
    g0 = torch.func.grad(lambda x: mu * torch.logsumexp((A @ x - b) / mu, 0))(
        torch.zeros(n, dtype=DT)
    )
    A = A - g0[None, :]
    return A, b, mu, (lambda x: mu * torch.logsumexp((A @ x - b) / mu, 0))


@pytest.fixture
def spd():
    """``spd(d, seed, shift=0.1)``: a random SPD matrix."""
    return _spd


@pytest.fixture
def lse_problem():
    """``lse_problem(m, n, mu, seed) -> (A, b, mu, f)``: log-sum-exp with ∇f(0) = 0."""
    return _lse_problem
