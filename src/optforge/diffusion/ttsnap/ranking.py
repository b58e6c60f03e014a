r"""How TTSnap orders candidates: by score, or by Borda count over several rewards.

With one reward the pool is sorted by score, best first. With :math:`R` rewards each candidate
gets, per reward, its competition rank :math:`\rho_r(i) = \#\{j : s_{jr} < s_{ir}\}` inside the
current pool (0 = worst, ties share the lower rank) and the pool is sorted by the rank sum
:math:`\sum_r \rho_r(i)` (Borda count), as in Q. Yu et al., "TTSnap: Test-Time Scaling of
Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242.

Choices: the sort is *stable* and descending (equal keys keep pool order), so for one reward
the Borda order equals the score order, ties included.

Example::

    import torch
    from optforge.diffusion.ttsnap import borda_scores

    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.0, 0.0]])  # [M, R]
    borda_scores(scores)                                   # tensor([3, 3, 4, 1])
"""

from __future__ import annotations

import torch
from torch import Tensor

from optforge._core import check_tensor

__all__ = ["borda_scores"]


def borda_scores(scores: Tensor) -> Tensor:
    """Rank-sum over rewards (Borda count) along the candidate dimension.

    Args:
        scores: ``[..., M, R]`` scores of ``M`` candidates under ``R`` rewards.

    Returns:
        ``[..., M]`` sums over rewards of the competition rank (number of candidates in the
        pool with a strictly smaller score; 0 = worst, ties share the lower rank).
    """
    check_tensor("scores", scores, dtype=None, nonempty=False)
    if scores.dim() < 2:
        raise ValueError(f"scores must be [..., M, R], got shape {tuple(scores.shape)}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores contains NaN: a NaN score has no rank")
    values = scores.transpose(-1, -2).contiguous()  # [..., R, M]
    ordered = values.sort(dim=-1).values
    ranks = torch.searchsorted(ordered, values, side="left")
    return ranks.sum(dim=-2)


def _rank_order(scores: Tensor, multi: bool) -> Tensor:
    """Indices of the candidates, best first (``multi``: Borda over the last dimension)."""
    key = borda_scores(scores) if multi else scores
    return torch.sort(key, dim=-1, descending=True, stable=True).indices
