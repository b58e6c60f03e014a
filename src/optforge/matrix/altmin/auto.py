"""``solver="auto"``: exact normal equations or sketch-and-precondition, by rank and sampling.

The sketched solver replaces the exact half-step's ``|Ω|k²/2`` Gram products by ``q + 1``
normal-equation passes of ``2|Ω|k``, one sketch pass and a sketch Gram of ``n s k²``
(``s = 4k``), so it can only win when ``k`` is large enough for the saved factor ``k`` to beat
those passes, and when a column's ``|Ω_j|`` is well above ``s`` (otherwise the sketch
compresses little: the paper's regime is ``|Ω_j| ≳ k²``). On a CPU the exact Gram is one large
BLAS-3 product, the sketch's passes are smaller products, so the measured crossover sits far
above the flop-count one. :func:`choose_solver` encodes it (measured 2026-12-06 on a shared
2-core x86 CPU, one thread, float64, ``benchmarks/altmin.py crossover``; the table and plot are
on the method's docs page; CPU time of one sweep, p = 0.5): the sketch (q = 3) took 2.8–3.5×
the optimised exact sweep at k = 16 whatever |Ω|, 1.02–1.06× at k = 64 with |Ω_j| = 1500
(5.9 s), 0.93× at |Ω_j| = 2000 and 0.89× at |Ω_j| = 2500 (9.8 s), 1.02× at k = 96 with
|Ω_j| = 1500 (3.9 s). So the sketch from rank :data:`SKETCH_MIN_RANK`
on, when the median column and row both have at least :data:`SKETCH_MIN_COMPRESSION` times
``s`` observations; exact normal equations otherwise.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import choose_solver
    >>> choose_solver(4, torch.full((500,), 100), torch.full((500,), 100))
    'exact'
    >>> choose_solver(64, torch.full((5000,), 2500), torch.full((5000,), 2500))
    'sketch'
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["SKETCH_MIN_COMPRESSION", "SKETCH_MIN_RANK", "choose_solver"]

#: smallest rank at which ``solver="auto"`` considers the sketch.
SKETCH_MIN_RANK = 64
#: ... and only when the median column and row have this many times ``s = 4k`` observations.
SKETCH_MIN_COMPRESSION = 8.0


def choose_solver(rank: int, col_counts: Tensor, row_counts: Tensor) -> Literal["exact", "sketch"]:
    """``"sketch"`` or ``"exact"`` for rank ``rank`` with ``col_counts[j] = |Ω_j|`` observations
    per column and ``row_counts[i]`` per row (the measured CPU crossover)."""
    if rank < SKETCH_MIN_RANK:
        return "exact"
    s = max(4 * rank, rank + 8)
    typical = min(
        float(torch.median(col_counts.double())), float(torch.median(row_counts.double()))
    )
    return "sketch" if typical >= SKETCH_MIN_COMPRESSION * s else "exact"
