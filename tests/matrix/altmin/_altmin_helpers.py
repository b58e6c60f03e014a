"""Shared problem builders of the AltMin tests."""

import math

import torch

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_problem(seed, n_cols=50, k=5, d_lo=None, d_hi=40, m=60):
    """Random per-column regressions with |Ω_j| in [d_lo, d_hi]."""
    g = _gen(seed)
    d_lo = k if d_lo is None else d_lo
    counts = torch.randint(d_lo, d_hi + 1, (n_cols,), generator=g)
    rows = torch.cat([torch.randperm(m, generator=g)[: int(c)] for c in counts])
    cols = torch.repeat_interleave(torch.arange(n_cols), counts)
    perm = torch.randperm(rows.numel(), generator=g)  # entries in arbitrary order
    rows, cols = rows[perm], cols[perm]
    U = torch.randn(m, k, generator=g, dtype=DT)
    vals = torch.randn(rows.numel(), generator=g, dtype=DT)
    return U, rows, cols, vals, n_cols


def _lstsq_loop(U, rows, cols, vals, n_cols, ridge=0.0):
    k = U.shape[1]
    out = torch.zeros(n_cols, k, dtype=DT)
    for j in range(n_cols):
        sel = cols == j
        a, b = U[rows[sel]], vals[sel]
        if ridge > 0:
            a = torch.cat([a, math.sqrt(ridge) * torch.eye(k, dtype=DT)])
            b = torch.cat([b, torch.zeros(k, dtype=DT)])
        out[j] = torch.linalg.pinv(a) @ b  # minimum-norm least squares
    return out


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
