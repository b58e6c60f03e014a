"""Random sketches of many small regressions at once: CountSketch, SRHT and Gaussian.

A sketch ``S ∈ R^{s×d}`` with ``E[SᵀS] = I`` replaces a tall regression ``(A, b)`` by a short
one ``(SA, Sb)`` of ``s = O(k)`` rows. :func:`sketch_columns` applies an independent sketch
``S_j`` to every column's ``(A_j, b_j)`` of a padded :class:`~optforge.matrix.altmin.ColumnLayout`:

* CountSketch (Clarkson–Woodruff): every row is hashed to one of ``s`` buckets with a random
  sign, ``(SA)_h = Σ_{i: h(i) = h} σ_i A_i``; O(dk) per column, one ``index_add_``.
* SRHT (subsampled randomized Hadamard transform): ``S = √(D/s) P H D_σ`` with random signs
  ``D_σ``, the orthonormal Walsh–Hadamard transform ``H`` of the column padded to length
  ``D = 2^⌈log₂ d⌉`` and ``s`` rows ``P`` sampled with replacement; O(Dk log D).
* Gaussian: i.i.d. N(0, 1/s) entries; O(dsk) (small problems and tests).

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import sketch_columns
    >>> A = torch.randn(10, 50, 3, dtype=torch.float64)   # 10 regressions of 50 rows, k = 3
    >>> b = torch.randn(10, 50, dtype=torch.float64)
    >>> SA, Sb = sketch_columns(A, b, 12, "countsketch", torch.Generator().manual_seed(0))
    >>> SA.shape, Sb.shape
    (torch.Size([10, 12, 3]), torch.Size([10, 12]))
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_choice, check_positive_int

__all__ = ["SketchKind", "sketch_columns"]

SketchKind = Literal["countsketch", "srht", "gaussian"]
_SKETCHES = ("countsketch", "srht", "gaussian")


def sketch_columns(
    design: Tensor,
    target: Tensor,
    sketch_size: int,
    kind: SketchKind = "countsketch",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Apply an independent random sketch ``S_j`` to every column's regression ``(A_j, b_j)``.

    Rows of ``design``/``target`` that are zero padding do not change the result (a sketch of a
    zero row is zero), so a padded :class:`~optforge.matrix.altmin.ColumnLayout` can be passed
    directly.

    * ``"countsketch"``: each row goes to bucket ``h ∈ [s]`` with sign ``σ = ±1``;
      O(d k) per column by one ``index_add_``.
    * ``"srht"``: random signs, orthonormal Walsh–Hadamard transform of the column padded to
      the next power of two ``D``, then ``s`` rows sampled with replacement and scaled by
      ``√(D/s)``; O(D k log D).
    * ``"gaussian"``: i.i.d. N(0, 1/s) entries; O(d s k) (small problems and tests).

    All three satisfy ``E[SᵀS] = I``.

    Args:
        design: (n, d, k) stacked design matrices ``A_j``.
        target: (n, d) stacked right-hand sides ``b_j``.
        sketch_size: sketch rows ``s``.
        kind: ``"countsketch"``, ``"srht"`` or ``"gaussian"``.
        generator: source of the sketch's randomness.

    Returns:
        ``(SA, Sb)`` of shapes (n, s, k) and (n, s).
    """
    check_choice("sketch", kind, _SKETCHES)
    s = check_positive_int("sketch_size", sketch_size)
    n, d, k = design.shape
    dev, dt = design.device, design.dtype
    if kind == "countsketch":
        # Bucket h and sign σ in one draw: positive rows go to slot h, negative rows to slot
        # s + h, and SA = slots[:s] − slots[s:]. This avoids a pass multiplying A by σ.
        slot = torch.randint(2 * s, (n, d), generator=generator, device=dev)
        flat = (torch.arange(n, device=dev)[:, None] * (2 * s) + slot).reshape(-1)
        out_a = torch.zeros(n * 2 * s, k, dtype=dt, device=dev)
        out_a.index_add_(0, flat, design.reshape(n * d, k))
        out_b = torch.zeros(n * 2 * s, dtype=dt, device=dev)
        out_b.index_add_(0, flat, target.reshape(n * d))
        out_a, out_b = out_a.reshape(n, 2, s, k), out_b.reshape(n, 2, s)
        return out_a[:, 0] - out_a[:, 1], out_b[:, 0] - out_b[:, 1]
    aug = torch.cat((design, target[:, :, None]), 2)  # sketch A and b together
    if kind == "gaussian":
        g = torch.randn(n, s, d, generator=generator, device=dev, dtype=dt)
        out = (g @ aug) / math.sqrt(s)
    else:  # srht
        length = 1 << max(0, d - 1).bit_length()
        sign = torch.randint(2, (n, d, 1), generator=generator, device=dev).to(dt) * 2 - 1
        padded = torch.nn.functional.pad(aug * sign, (0, 0, 0, length - d))
        mixed = _fwht(padded)
        pick = torch.randint(length, (n, s), generator=generator, device=dev)
        out = torch.gather(mixed, 1, pick[:, :, None].expand(n, s, k + 1))
        out = out * math.sqrt(length / s)
    return out[:, :, :k], out[:, :, k]


def _fwht(x: Tensor) -> Tensor:
    """Orthonormal fast Walsh–Hadamard transform along dim 1 (length a power of 2)."""
    n, length = x.shape[0], x.shape[1]
    rest = x.shape[2:]
    h = 1
    y = x
    while h < length:
        y = y.reshape(n, length // (2 * h), 2, h, *rest)
        y = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return y.reshape(n, length, *rest) / math.sqrt(length)
