"""The perturbation budget: projection onto ``‖δ_i‖ ≤ eps`` and the valid input box.

Unlearnable-example perturbations ``δ`` are bounded per example in the ℓ∞ or ℓ2 norm and must
keep the inputs valid (``x + δ`` inside ``clamp``, e.g. ``[0, 1]`` for images). For ``"linf"``
the projection is exact (the constraints are separable); for ``"l2"`` the ball projection is
followed by the box clamp, which is feasible (clamping only shrinks coordinates of δ) but not
the exact Euclidean projection onto the intersection.

Example::

    >>> import torch
    >>> x = torch.rand(4, 3)
    >>> delta = project_perturbation(torch.randn(4, 3), x, eps=0.1)
    >>> bool(delta.abs().max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from optforge._core import check_finite, check_positive

__all__ = ["project_perturbation"]

Norm = Literal["linf", "l2"]


def project_perturbation(
    delta: Tensor,
    x: Tensor,
    eps: float,
    norm: Norm = "linf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Project ``delta`` onto the budget ``‖δ_i‖ ≤ eps`` and the box ``x + δ ∈ clamp``.

    For ``"linf"`` this is the exact Euclidean projection (the constraints are separable). For
    ``"l2"`` the ball projection is followed by the box clamp: feasible, not exactly Euclidean.

    Args:
        delta: perturbation, same shape as ``x`` (first dimension = examples).
        x: clean inputs.
        eps: budget (> 0).
        norm: ``"linf"`` or ``"l2"`` (per example).
        clamp: valid input range ``(low, high)`` or ``None``.

    Returns:
        The projected perturbation (a new tensor).
    """
    check_positive("eps", eps)
    _check_norm(norm)
    _check_clamp(clamp)
    if delta.shape != x.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} != x shape {tuple(x.shape)}")
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_example_norm(delta).clamp_min(eps))
    if clamp is not None:
        delta = (x + delta).clamp(clamp[0], clamp[1]) - x
    return delta


def _check_clamp(clamp: tuple[float, float] | None) -> None:
    if clamp is not None and not (len(clamp) == 2 and float(clamp[0]) < float(clamp[1])):
        raise ValueError(f"clamp must be None or (low, high) with low < high, got {clamp!r}")


def _check_x_range(x: Tensor, clamp: tuple[float, float] | None) -> None:
    check_finite("x", x)
    if clamp is not None:
        lo, hi = float(x.min()), float(x.max())
        if lo < clamp[0] or hi > clamp[1]:
            raise ValueError(
                f"x must lie in the declared range clamp={tuple(clamp)}, got values in "
                f"[{lo:.4g}, {hi:.4g}] (rescale the inputs or pass clamp=None)"
            )


def _check_norm(norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def _per_example_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))
