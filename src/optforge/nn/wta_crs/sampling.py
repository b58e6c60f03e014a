"""The WTA-CRS sampler: ``k`` row indices and importance weights from one sort, one cumulative
sum, one ``rand`` and one ``searchsorted``, with no host synchronisation.

Given non-negative scores ``p`` over ``N`` rows (any scale; they are used only through ratios),
WTA-CRS keeps the ``|C|`` highest-scoring rows exactly (weight 1) and draws the other
``s = k − |C|`` i.i.d. from the residual distribution ``q_j = p_j / R`` (``R = Σ_{j∉C} p_j``),
with weight ``1/(s·q_j) = (R/s)/p_j``. The adaptive rule of the paper and of the official code
chooses ``|C| = argmin_{0 ≤ c < k} R_c/(k − c)`` where ``R_c`` is the mass left after the ``c``
largest scores (``c = 0`` is plain CRS; ties go to more winners). One ascending sort serves both
steps: after sorting, the residual of ``c`` winners is the prefix sum ``cum[N−1−c]``, so

* the score of every candidate is ``cum / denom`` with a fixed table ``denom`` (``s`` on the last
  ``k`` positions, 0 — score ``+∞`` — elsewhere) and one ``min`` gives ``R/s`` and ``|C|``;
* the ``s`` draws are ``searchsorted(cum, u·R)`` for ``u ~ U[0, 1)``: the prefix below ``R``
  is exactly the residual rows, and ``fl(u·R) < R`` for every ``u ≤ 1 − 2⁻²⁴`` (the largest
  fp32 ``rand`` value) and every normal ``R`` above the smallest normal float (``R`` sums at
  least two clamped scores), so a draw never lands on a winner or past the end;
* the weights are ``max(1, (R/s)/p)``: at the argmin, winners have ``p ≥ R/s`` and residual rows
  ``p ≤ R/s`` (``score(c+1) ≤ score(c) ⇔ p_(c) ≥ score(c)``), so the same formula gives 1 to the
  winners and ``1/(s q_j)`` to the draws.

Scores are clamped below at the smallest normal float (``fmax``, which also maps a NaN score to
it), so zero rows keep a positive probability (they contribute nothing, so the estimate stays
unbiased), every weight is finite and every index is in range whatever the input holds. Every tensor
has a fixed shape (``k`` slots, winners first: ``where(slot is a winner, winner, draw)``), so the
sampler never reads a value back to the host and ``torch.compile`` captures it whole.

Example:
    >>> import torch
    >>> from optforge.nn.wta_crs import sample_indices
    >>> scores = torch.tensor([8.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    >>> idx, w = sample_indices(scores, 3, generator=torch.Generator().manual_seed(0))
    >>> int(idx[0]), float(w[0])  # the dominant row is a winner, kept with weight 1
    (0, 1.0)
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_in_range, check_is_tensor, check_positive_int

__all__ = [
    "approx_matmul",
    "n_winners",
    "sample_indices",
    "sample_rows",
    "sample_size",
]

Method = Literal["wta", "crs"]


def sample_size(n: int, ratio: float, min_k: int) -> int:
    """The number of sampled rows ``k = min(max(round(ratio · n), min_k), n)``."""
    return min(max(round(ratio * n), min_k), n)


# --------------------------------------------------------------------------- fixed tables
@functools.lru_cache(maxsize=64)
def _cached_tables(
    n: int, k: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    return _tables(n, k, device, dtype)


def _tables(n: int, k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``denom`` over ascending-sorted positions and the winner-first slot positions.

    Position ``j ≥ N − k`` leaves ``s = j − (N − k) + 1`` stochastic slots (``|C| = k − s``);
    ``denom`` is 0 elsewhere so those scores are ``+∞``. Slot ``t`` holds sorted position
    ``N − 1 − t`` when it is a winner.
    """
    denom = (torch.arange(n, device=device, dtype=dtype) - (n - k - 1)).clamp_min(0)
    slots = torch.arange(n - 1, n - k - 1, -1, device=device)
    return denom, slots


def _get_tables(n: int, k: int, p: Tensor) -> tuple[Tensor, Tensor]:
    # A cache of constant tensors saves two kernel launches per layer in eager mode; under
    # torch.compile the tables are part of the traced graph (constant-folded).
    if torch.compiler.is_compiling():
        return _tables(n, k, p.device, p.dtype)
    return _cached_tables(n, k, p.device, p.dtype)


# --------------------------------------------------------------------------- draws
def _draw_wta(p: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Adaptive WTA-CRS over positive scores ``p`` (``k < N``): see the module docstring."""
    n = p.numel()
    denom, slots = _get_tables(n, k, p)
    sorted_p, order = torch.sort(p)
    cum = torch.cumsum(sorted_p, 0)
    min_score, last = torch.min(cum / denom, 0, keepdim=True)  # R/s, position of R
    residual = cum.index_select(0, last)
    u = torch.rand(k, generator=generator, device=p.device, dtype=p.dtype)
    pos = torch.searchsorted(cum, u * residual, right=True)
    sel = torch.where(slots > last, slots, pos)
    idx = order.index_select(0, sel)
    weights = torch.div(min_score, sorted_p.index_select(0, sel)).clamp_min_(1.0)
    return idx, weights


def _draw_fixed(
    p: Tensor, k: int, n_win: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """WTA-CRS with a fixed number of winners ``n_win`` (``1 ≤ n_win < k < N``)."""
    n = p.numel()
    _, slots = _get_tables(n, k, p)
    sorted_p, order = torch.sort(p)
    cum = torch.cumsum(sorted_p, 0)
    residual = cum[n - n_win - 1 : n - n_win]
    u = torch.rand(k, generator=generator, device=p.device, dtype=p.dtype)
    # searching the residual prefix without its last entry gives the same draw for every
    # u·R < R and an index inside the residual rows even when R is inf (an inf input row)
    pos = torch.searchsorted(cum[: n - n_win - 1], u * residual, right=True)
    is_win = slots >= n - n_win
    sel = torch.where(is_win, slots, pos)
    idx = order.index_select(0, sel)
    draw_w = (residual / (k - n_win)) / sorted_p.index_select(0, sel)
    return idx, torch.where(is_win, 1.0, draw_w)


def _draw_crs(p: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Plain column-row sampling: ``k`` i.i.d. draws from ``p``, weights ``1/(k q_j)``."""
    cum = torch.cumsum(p, 0)
    total = cum[-1:]
    u = torch.rand(k, generator=generator, device=p.device, dtype=p.dtype)
    # cum[:-1]: the same draw for every u·total < total, and an index < N even when the total
    # is inf (an inf input row; with fmax'ed scores the prefix sums hold no NaN)
    idx = torch.searchsorted(cum[:-1], u * total, right=True)
    return idx, (total / k) / p.index_select(0, idx)


def _draw(
    p: Tensor,
    k: int,
    *,
    method: Method,
    det_ratio: float | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    if method == "crs":
        return _draw_crs(p, k, generator)
    if det_ratio is not None:
        n_win = math.floor(k * det_ratio)
        return _draw_fixed(p, k, n_win, generator) if n_win > 0 else _draw_crs(p, k, generator)
    if k == 1:
        return _draw_crs(p, k, generator)
    return _draw_wta(p, k, generator)


@functools.lru_cache(maxsize=16)
def _cached_floor(device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.full((), torch.finfo(dtype).tiny, device=device, dtype=dtype)


def _positive(scores: Tensor) -> Tensor:
    """``max(scores, tiny)`` with NaN mapped to ``tiny`` (``fmax`` ignores NaN), one operator.

    A NaN score (a NaN in the input row or in a cached gradient norm) must not reach the prefix
    sums: a NaN residual mass sends ``searchsorted`` past the last row, an out-of-range gather
    (an ``IndexError`` on CPU, a device-side assert on CUDA). With ``fmax`` the row gets the
    smallest probability instead, and the non-finite value still shows in the layer's output.
    """
    if torch.compiler.is_compiling():
        floor = torch.full((), torch.finfo(scores.dtype).tiny, device=scores.device)
        return torch.fmax(scores, floor.to(scores.dtype))
    return torch.fmax(scores, _cached_floor(scores.device, scores.dtype))


# --------------------------------------------------------------------------- public API
def sample_indices(
    probs: Tensor,
    k: int,
    *,
    adaptive: bool = True,
    det_ratio: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``k`` row indices and importance weights for an unbiased WTA-CRS estimate.

    For any vectors ``v_i``, ``Σ_t weights[t] · v[idx[t]]`` is an unbiased estimate of
    ``Σ_i v_i`` (exact when ``k >= len(probs)``).

    Args:
        probs: Non-negative sampling scores of shape ``(N,)``, any scale (fp32 or fp64; other
            floating dtypes are computed in fp32).
        k: Number of slots to fill (``>= 1``).
        adaptive: Choose the number of winners ``|C|`` by the paper's adaptive rule. With
            ``adaptive=False`` and no ``det_ratio`` this is plain CRS (``|C| = 0``).
        det_ratio: Fixed winner fraction, ``|C| = floor(k · det_ratio)``, in ``[0, 1)``; takes
            precedence over ``adaptive``.
        generator: Random generator for the stochastic draws (default: torch's global one).

    Returns:
        ``(idx, weights)``: int64 indices of shape ``(k,)`` (winners first, in decreasing score;
        stochastic draws may repeat) and weights of shape ``(k,)`` in the scores' dtype (1 for
        winners, ``1/(s·q_j)`` for draws).
    """
    if not isinstance(probs, Tensor) or probs.dim() != 1:
        raise ValueError("probs must be a 1-D tensor of non-negative scores")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating-point tensor, got dtype {probs.dtype}")
    k = check_positive_int("k", k)
    if det_ratio is not None:
        check_in_range("det_ratio", det_ratio, 0.0, 1.0, high_inclusive=False)
    n = probs.numel()
    if k >= n:
        return torch.arange(n, device=probs.device), torch.ones(n, device=probs.device)
    p = probs if probs.dtype in (torch.float32, torch.float64) else probs.float()
    method: Method = "wta" if adaptive or det_ratio is not None else "crs"
    return _draw(_positive(p), k, method=method, det_ratio=det_ratio, generator=generator)


def sample_rows(
    rows: Tensor,
    k: int,
    *,
    method: Method = "wta",
    det_ratio: float | None = None,
    generator: torch.Generator | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ``k`` of the rows of ``rows`` (``N × d``, ``k < N``) with scores ``‖rows_i‖``.

    The layer's sampler: row norms in fp32 (fp64 for fp64 rows), times ``scale`` (e.g. cached
    gradient norms) when given, clamped positive, then :func:`sample_indices`' draws. No
    validation, no host sync.

    Returns:
        ``(idx, weights)`` as :func:`sample_indices`, weights in fp32 (fp64 for fp64 rows).
    """
    wide = None if rows.dtype in (torch.float32, torch.float64) else torch.float32
    scores = torch.linalg.vector_norm(rows, dim=1, dtype=wide)
    if scale is not None:
        scores = scores * scale
    return _draw(_positive(scores), k, method=method, det_ratio=det_ratio, generator=generator)


def n_winners(
    probs: Tensor, k: int, *, method: Method = "wta", det_ratio: float | None = None
) -> int:
    """The number of winners ``|C|`` :func:`sample_indices` keeps for these scores (host sync).

    Computed with the sampler's own arithmetic (clamped scores, ascending sort, prefix sums), so
    it is the ``|C|`` of every draw; used by the closed-form variance.
    """
    n = probs.numel()
    if k >= n or method == "crs":
        return 0
    if det_ratio is not None:
        return math.floor(k * det_ratio)
    if k == 1:
        return 0
    p = _positive(probs if probs.dtype in (torch.float32, torch.float64) else probs.float())
    denom, _ = _tables(n, k, p.device, p.dtype)
    cum = torch.cumsum(torch.sort(p).values, 0)
    last = int(torch.argmin(cum / denom))
    return k - (last - (n - k) + 1)


def approx_matmul(
    x: Tensor,
    y: Tensor,
    k: int,
    *,
    method: Literal["wta", "crs", "uniform"] = "wta",
    probs: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Estimate ``x @ y`` from ``k`` sampled column-row pairs of the contraction dimension.

    Args:
        x: Left factor of shape ``(n, m)``.
        y: Right factor of shape ``(m, q)``.
        k: Number of column-row pairs (``1 <= k``; ``k >= m`` gives the exact product).
        method: ``"wta"`` (winners + residual sampling, adaptive ``|C|``), ``"crs"`` (i.i.d.
            sampling) or ``"uniform"`` (CRS with uniform probabilities).
        probs: Sampling scores of shape ``(m,)``; default ``‖x[:, i]‖ · ‖y[i, :]‖`` (optimal
            for CRS). Ignored by ``"uniform"``.
        generator: Random generator for the draws.

    Returns:
        The unbiased estimate of ``x @ y``, shape ``(n, q)``.
    """
    check_is_tensor("x", x)
    check_is_tensor("y", y)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[0]:
        raise ValueError(
            f"x and y must be matrices with x.shape[1] == y.shape[0], got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if method not in ("wta", "crs", "uniform"):
        raise ValueError(f"method must be 'wta', 'crs' or 'uniform', got {method!r}")
    if probs is not None:
        check_is_tensor("probs", probs)
        if probs.shape != (x.shape[1],):
            raise ValueError(
                f"probs must have shape ({x.shape[1]},) (one score per column of x), got "
                f"{tuple(probs.shape)}"
            )
    probs = _default_probs(x, y, method, probs)
    idx, w = sample_indices(probs, k, adaptive=method == "wta", generator=generator)
    return (x[:, idx] * w.to(x.dtype)) @ y[idx]


def _default_probs(x: Tensor, y: Tensor, method: str, probs: Tensor | None) -> Tensor:
    if method == "uniform":
        return torch.ones(x.shape[1], device=x.device)
    if probs is None:
        return torch.linalg.vector_norm(x, dim=0) * torch.linalg.vector_norm(y, dim=1)
    return probs
