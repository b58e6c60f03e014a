"""Shared fixtures of the TTSnap tests: a small DDIM sampler, rewards and schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from optforge.diffusion.ttsnap import DDIMSampler, PruningSchedule, SamplerState

SINGLE = PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5))
MULTI = PruningSchedule((4, 6, 11), (0.4, 0.5, 0.6))


def _abar() -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def _ddim(dim: int = 6, steps: int = 20, seed: int = 0) -> DDIMSampler:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, dim)).double()

    def denoiser(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        return net(torch.cat([x, t[:, None].double() / 1000], dim=1))

    timesteps = torch.linspace(999, 0, steps).round().long()
    return DDIMSampler(denoiser, _abar(), timesteps, (dim,), clip_x0=3.0)


def _reward(x: torch.Tensor, cond: object) -> torch.Tensor:
    return -((x - 0.3) ** 2).sum(1) + x[:, 0]


def _inter(x: torch.Tensor, cond: object, step: int) -> torch.Tensor:
    return _reward(x, cond) + 0.1 * math.sin(step) * x[:, 1]


class _FrozenSampler:
    """The estimate is the seed itself at every step (a perfect intermediate reward)."""

    num_steps = 20

    def init(self, n, cond, generator, noise=None):
        x = torch.randn(n, 3, generator=generator) if noise is None else noise
        return SamplerState(x, cond, torch.arange(n))

    def step(self, state, step_index):
        return state, state.x

    def select(self, state, index):
        return SamplerState(state.x[index], state.cond, state.index[index])

    def decode(self, x0_hat):
        return x0_hat
