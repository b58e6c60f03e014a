"""Shared helpers of the AdAdaGrad tests: NumPy reference formulas, a slow per-example loop,
a small float64 MLP and its data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["HAND_G", "_data", "_mlp", "_np_reference", "_slow_per_example"]


def _np_reference(G: np.ndarray, eta: float, theta: float, nu: float) -> dict[str, float]:
    b = G.shape[0]
    g = G.mean(0)
    var = G.var(0, ddof=1)
    g2 = float(g @ g)
    a = G @ g
    r = G - np.outer(a / g2, g)
    return {
        "S": float(var.sum()),
        "norm": float(var.sum()) / (eta**2 * g2),
        "var_a": float(a.var(ddof=1)),
        "ip": float(a.var(ddof=1)) / (theta**2 * g2**2),
        "orth": float(r.var(0, ddof=1).sum()) / (nu**2 * g2),
        "coord": float(np.max(var / (eta**2 * g**2))),
        "b": b,
    }


def _slow_per_example(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(rows)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=gen
    )


HAND_G = np.array(
    [[1.0, 2.0, -1.0], [0.5, 1.0, 0.0], [2.0, -1.0, 1.5], [1.5, 0.5, 0.5]], dtype=np.float64
)
