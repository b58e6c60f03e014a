r"""Spectral initialisation of alternating minimization from the observed entries.

The starting factor :math:`U_0` is the top-:math:`k` left singular subspace of
:math:`P_\Omega(M)/p`, the zero-filled observed matrix rescaled by the sampling rate (JNS13).
:func:`spectral_init` computes it by a Halko–Martinsson–Tropp randomized range finder with
QR-stabilised power iterations on the sparse entries (torch sparse CSR products, O(|Ω|(k +
oversample)) each), so it is seeded by a ``torch.Generator`` and runs on any device. With 4
power iterations it is as accurate for the initialisation as ``scipy.sparse.linalg.svds``.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import spectral_init
    >>> from optforge.problems import make_incoherent_lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> *_, rows, cols, vals = make_incoherent_lowrank(80, 60, 3, p=0.5, generator=g)
    >>> spectral_init(rows, cols, vals, (80, 60), 3, generator=g).shape
    torch.Size([80, 3])
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["spectral_init"]


def spectral_init(
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    shape: tuple[int, int],
    rank: int,
    *,
    n_power_iter: int = 4,
    oversample: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Top-``rank`` left singular vectors of ``P_Ω(M)/p`` by a randomized subspace iteration.

    Halko–Martinsson–Tropp range finder with ``n_power_iter`` QR-stabilised power iterations,
    on the sparse entries (O(|Ω|(k + oversample)) per product). The scale 1/p does not change
    the singular vectors.

    Args:
        rows: (|Ω|,) row indices.
        cols: (|Ω|,) column indices.
        vals: (|Ω|,) observed values.
        shape: ``(m, n)``.
        rank: number of vectors ``k``.
        n_power_iter: power iterations.
        oversample: extra random directions.
        generator: randomness of the test matrix.

    Returns:
        (m, rank) orthonormal matrix.
    """
    m, n = shape
    width = min(rank + oversample, m, n)
    mat = _csr(rows, cols, vals, (m, n))
    mat_t = _csr(cols, rows, vals, (n, m))
    omega = torch.randn(n, width, generator=generator, device=vals.device, dtype=vals.dtype)
    y = torch.linalg.qr(mat @ omega).Q
    for _ in range(n_power_iter):
        z = torch.linalg.qr(mat_t @ y).Q
        y = torch.linalg.qr(mat @ z).Q
    b = (mat_t @ y).T  # (width, n) = yᵀ P_Ω(M)
    u_small = torch.linalg.svd(b, full_matrices=False).U
    return y @ u_small[:, :rank]


def _csr(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """``P_Ω(M)`` as a torch sparse CSR matrix (fast ``@`` on CPU and GPU)."""
    idx = torch.stack((rows, cols))
    with warnings.catch_warnings():  # torch flags sparse CSR as "beta"
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False)
        return coo.coalesce().to_sparse_csr()
