r"""Incoherent low-rank matrices observed on a random set of entries (matrix completion test bed).

The planted matrix is

.. math::

    M = U^\star \operatorname{diag}(s^\star) V^{\star\top},\qquad
    s^\star = \mathrm{linspace}(1, \mathrm{cond}, k)\cdot\sqrt{mn/k},

with Haar-orthonormal :math:`U^\star \in \mathbb R^{m\times k}`, :math:`V^\star \in
\mathbb R^{n\times k}` (QR of Gaussian matrices), so the entries of :math:`M` are O(1) and its
condition number is ``cond``. Haar factors are incoherent with high probability, the setting of
alternating-minimization guarantees (Jain, Netrapalli, Sanghavi, STOC 2013). The observed set
:math:`\Omega` is Bernoulli(``p``) (each entry kept independently) or ``n_obs`` entries drawn
uniformly without replacement, and ``noise`` adds :math:`\mathcal N(0, \mathrm{noise}^2)` to
every observation.

Random draws, in order: :math:`U^\star`, :math:`V^\star`, the mask (row blocks of at most
:math:`2^{24}` entries) or the permutation, then the noise.

Example:
    >>> import torch
    >>> from optforge.problems import make_incoherent_lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> U, s, V, rows, cols, vals = make_incoherent_lowrank(60, 50, 2, p=0.5, generator=g)
    >>> U.shape, V.shape, s.shape
    (torch.Size([60, 2]), torch.Size([50, 2]), torch.Size([2]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive_int, make_generator

__all__ = ["make_incoherent_lowrank"]


def make_incoherent_lowrank(
    m: int,
    n: int,
    k: int,
    cond: float = 2.0,
    p: float | None = None,
    n_obs: int | None = None,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A random incoherent rank-``k`` matrix ``M = U* diag(s*) V*ᵀ`` and its observed entries.

    ``U*``, ``V*`` are Haar-orthonormal (QR of Gaussians), ``s* = linspace(1, cond, k)·√(mn/k)``
    (so entries are O(1)), Ω is Bernoulli(p) (or ``n_obs`` entries uniformly without
    replacement), and ``noise`` adds N(0, noise²) to each observation.

    Returns:
        ``(U_star, s_star, V_star, rows, cols, vals)``.
    """
    check_positive_int("m", m)
    check_positive_int("n", n)
    check_positive_int("k", k)
    if k > min(m, n):
        raise ValueError(f"k must be <= min(m, n) = {min(m, n)}, got {k}")
    if not isinstance(cond, int | float) or not math.isfinite(cond) or cond < 1:
        raise ValueError(
            f"cond (the condition number s_max/s_min) must be a finite >= 1, got {cond!r}"
        )
    check_nonnegative("noise", noise)
    if (p is None) == (n_obs is None):
        raise ValueError("give exactly one of p or n_obs")
    gen = generator if generator is not None else make_generator(None, device)
    dev = torch.device(device)
    u_star = torch.linalg.qr(torch.randn(m, k, generator=gen, device=dev, dtype=dtype)).Q
    v_star = torch.linalg.qr(torch.randn(n, k, generator=gen, device=dev, dtype=dtype)).Q
    s_star = torch.linspace(1.0, cond, k, dtype=dtype, device=dev) * math.sqrt(m * n / k)
    if p is not None:
        if not 0 < p <= 1:
            raise ValueError(f"p must be in (0, 1], got {p!r}")
        block = max(1, 2**24 // n)
        found = []
        for r0 in range(0, m, block):
            r1 = min(m, r0 + block)
            mask = torch.rand(r1 - r0, n, generator=gen, device=dev) < p
            found.append(mask.nonzero() + torch.tensor([r0, 0], device=dev))
        idx = torch.cat(found)
        rows, cols = idx[:, 0].contiguous(), idx[:, 1].contiguous()
    else:
        if not 0 < n_obs <= m * n:
            raise ValueError(f"n_obs must be in [1, m*n], got {n_obs!r}")
        flat = torch.randperm(m * n, generator=gen, device=dev)[:n_obs]
        rows, cols = flat // n, flat % n
    # ⟨U*_r s*, V*_c⟩ in blocks of entries: a single gather would hold two |Ω| × k copies
    # (17 GB at m = n = 5000, k = 64, p = 0.7)
    us = u_star * s_star
    step = max(1, 2**22 // k)
    vals = (
        torch.cat(
            [
                (us[rows[i : i + step]] * v_star[cols[i : i + step]]).sum(1)
                for i in range(0, rows.numel(), step)
            ]
        )
        if rows.numel()
        else rows.new_zeros(0, dtype=dtype)
    )
    if noise > 0:
        vals = vals + noise * torch.randn(vals.shape, generator=gen, device=dev, dtype=dtype)
    return u_star, s_star, v_star, rows, cols, vals
