"""Relative Frobenius error of a factored completion, computed from the factors.

``relative_error(U, V, U*, s*, V*) = ‖UVᵀ − U* diag(s*) V*ᵀ‖_F / ‖s*‖`` (``‖s*‖`` is the
Frobenius norm of the target), evaluated in O((m + n)k²) without forming an m×n matrix.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import relative_error
    >>> from optforge.problems import make_incoherent_lowrank
    >>> U, s, V, *_ = make_incoherent_lowrank(30, 20, 2, p=0.5,
    ...                                       generator=torch.Generator().manual_seed(0))
    >>> relative_error(U * s, V, U, s, V) < 1e-14
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["relative_error"]


def relative_error(U: Tensor, V: Tensor, U_star: Tensor, s_star: Tensor, V_star: Tensor) -> float:
    """``‖UVᵀ − U* diag(s*) V*ᵀ‖_F / ‖s*‖`` without forming an m×n matrix.

    Writes the difference as ``[U, −U*Σ] [V, V*]ᵀ`` and takes the R factors of both thin QRs:
    ``‖ABᵀ‖_F = ‖R_A R_Bᵀ‖_F``. Backward stable (accurate down to ~1e-15 relative, unlike the
    Gram/trace formula, which cancels below ~1e-8), O((m + n)k²).
    """
    a = torch.cat((U, -U_star * s_star), 1)
    b = torch.cat((V, V_star), 1)
    ra = torch.linalg.qr(a).R
    rb = torch.linalg.qr(b).R
    return float(torch.linalg.norm(ra @ rb.T) / torch.linalg.norm(s_star))
