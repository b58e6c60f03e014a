"""The observed entries of a matrix grouped by column, in a padded layout for batched solves.

Alternating minimization solves one small regression per column ``j``: with the factor ``U``
fixed, ``min_v ‖A_j v − b_j‖`` where ``A_j = U[Ω_j]`` stacks the rows of ``U`` at the observed
rows ``Ω_j`` of column ``j`` and ``b_j = M[Ω_j, j]``. :class:`ColumnLayout` stores the flat list
of observed entries ``(rows, cols, vals)`` as an ``(n, d_max)`` index/target pair, padded with a
pointer to an appended zero row, so gathering ``U`` through it yields every ``A_j`` at once as
an ``(n, d_max, k)`` tensor and products with all of them are batched BLAS calls (``bmm``).
Padding rows are zero, so they change neither ``A_jᵀA_j`` nor ``A_jᵀb_j`` nor any sketch.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import ColumnLayout
    >>> rows, cols = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1])
    >>> layout = ColumnLayout.build(rows, cols, torch.tensor([1.0, 2.0, 3.0]), n_cols=2, n_rows=3)
    >>> layout.design(torch.eye(3)).shape  # (n_cols, d_max, k)
    torch.Size([2, 2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ColumnLayout"]


@dataclass
class ColumnLayout:
    """The observed entries grouped by column in a padded (n, d_max) layout.

    ``index[j, t]`` is the row of the t-th observation of column ``j`` (``pad`` = the number of
    factor rows, pointing at an appended zero row, for t ≥ d_j), ``target[j, t]`` its value
    (0 when padded). Gathering ``U`` through ``index`` gives every column's design matrix
    ``A_j`` at once, so products with all ``A_j`` are batched BLAS calls (``bmm``).
    """

    index: Tensor
    target: Tensor
    counts: Tensor
    n_obs: int

    @classmethod
    def build(
        cls, rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int, n_rows: int
    ) -> ColumnLayout:
        counts, pos = _positions(cols, n_cols)
        d_max = max(1, int(counts.max().item())) if cols.numel() else 1
        index = torch.full((n_cols, d_max), n_rows, dtype=torch.long, device=rows.device)
        index[cols, pos] = rows
        target = torch.zeros(n_cols, d_max, dtype=vals.dtype, device=vals.device)
        target[cols, pos] = vals
        return cls(index=index, target=target, counts=counts, n_obs=int(rows.numel()))

    def design(self, U: Tensor) -> Tensor:
        """All design matrices ``A_j = U[Ω_j]`` as an (n, d_max, k) tensor (zero-padded)."""
        u_ext = torch.cat((U, U.new_zeros(1, U.shape[1])), 0)
        return u_ext[self.index]


class _LayoutCache:
    """Remembers the layouts of the last two index sets (the V- and U-step of a sweep)."""

    def __init__(self) -> None:
        self._items: list[tuple[Tensor, Tensor, Tensor, int, int, ColumnLayout]] = []

    def get(self, rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int, n_rows: int) -> Any:
        for r, c, v, nc, nr, layout in self._items:
            if r is rows and c is cols and v is vals and nc == n_cols and nr == n_rows:
                return layout
        layout = ColumnLayout.build(rows, cols, vals, n_cols, n_rows)
        self._items = [*self._items[-1:], (rows, cols, vals, n_cols, n_rows, layout)]
        return layout


def _positions(cols: Tensor, n_cols: int) -> tuple[Tensor, Tensor]:
    """Per-column counts and each entry's position within its column (stable order)."""
    counts = torch.bincount(cols, minlength=n_cols)
    order = torch.argsort(cols, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(cols)
    pos[order] = torch.arange(cols.numel(), device=cols.device) - starts[cols[order]]
    return counts, pos
