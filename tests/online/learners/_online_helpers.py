"""Helpers shared by the online-learner tests: float64 zeros, a fixed gradient sequence."""

import torch

F64 = torch.float64


def _zeros(*shape):
    return torch.zeros(*shape, dtype=F64)


def _play(learner, grads):
    """Play a fixed gradient sequence; returns the points played."""
    xs = []
    for g in grads:
        xs.append(learner.predict().clone())
        learner.update(g)
    return torch.stack(xs)


def _grads(n=50, d=4, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=gen, dtype=F64)
