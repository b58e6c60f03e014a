r"""The sensing operators of a quadratic network seen as matrix sensing.

A quadratic network's centred label is ``y_μ = ⟨Z_μ, S°⟩`` with ``Z_μ = (x_μx_μᵀ − I)/√d``, so

.. math::

    \mathcal A(S)_\mu = \frac{x_\mu^\top S x_\mu - \operatorname{Tr} S}{\sqrt d},\qquad
    \mathcal A^*(g) = \frac{X^\top \operatorname{diag}(g) X - (\sum_\mu g_\mu) I}{\sqrt d},

applied as ``((X @ S) * X).sum(1)`` and ``X.T @ (g[:, None] * X)`` in O(nd²), never forming
the ``n×d×d`` tensor of the ``Z_μ``.

Example:
    >>> import torch
    >>> from optforge.matrix.gamp_rie import sensing_adjoint, sensing_forward
    >>> X = torch.randn(50, 8, dtype=torch.float64)
    >>> S, g = torch.eye(8, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    >>> lhs = sensing_forward(X, S) @ g                 # <A(S), g> = <S, A*(g)>
    >>> bool(torch.isclose(lhs, (sensing_adjoint(X, g) * S).sum()))
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sensing_adjoint", "sensing_forward"]


def sensing_forward(X: Tensor, S: Tensor) -> Tensor:
    """``𝒜(S)_μ = (x_μᵀ S x_μ − Tr S)/√d`` for ``X`` of shape ``(n, d)``; O(n d²)."""
    return (((X @ S) * X).sum(1) - torch.trace(S)) / math.sqrt(X.shape[1])


def sensing_adjoint(X: Tensor, g: Tensor) -> Tensor:
    """``𝒜*(g) = (Xᵀ diag(g) X − (Σ g) I)/√d``, the adjoint of :func:`sensing_forward`."""
    d = X.shape[1]
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    return (X.T @ (g[:, None] * X) - g.sum() * eye) / math.sqrt(d)
