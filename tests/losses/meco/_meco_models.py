"""Unnormalised 1-D models, noise and quadrature shared by the MECO tests."""

import math

import numpy as np
import torch
from torch import nn

D = torch.float64
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def std_normal(dim=1, dtype=D):
    base = torch.distributions.Normal(torch.zeros(dim, dtype=dtype), torch.ones(dim, dtype=dtype))
    return torch.distributions.Independent(base, 1)


class Quadratic(nn.Module):
    """f_θ(x) = −(x − θ)²/2 in 1-D (a unit-variance Gaussian, unnormalised)."""

    def __init__(self, theta=0.0, dtype=D):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=dtype))

    def forward(self, x):
        return -0.5 * (x[:, 0] - self.theta) ** 2


def hermite(mean, n=200):
    """Gauss–Hermite nodes (n, 1) and probability weights for N(mean, 1)."""
    t, w = np.polynomial.hermite.hermgauss(n)
    x = torch.tensor(mean + math.sqrt(2) * t, dtype=D)[:, None]
    return x, torch.tensor(w / math.sqrt(math.pi), dtype=D)
