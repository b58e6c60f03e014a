"""Shared model of the SSO tests, as a fixture returning a factory."""

import pytest
import torch
from torch import nn

D64 = torch.float64


def _mlp(d_in=5, hidden=8, d_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).to(D64)


@pytest.fixture
def mlp():
    """``mlp(d_in=5, hidden=8, d_out=3, seed=0)``: a float64 tanh MLP seeded with ``seed``."""
    return _mlp
