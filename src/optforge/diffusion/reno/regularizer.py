r"""ReNO's noise regulariser: the negative log chi-density of the noise norm.

For a Gaussian noise :math:`z \in \mathbb R^d` the norm :math:`r = \|z\|` follows a chi
distribution with :math:`d` degrees of freedom, whose negative log-density is, up to a constant,

.. math::

    K(z) = \tfrac12 \|z\|^2 - (d - 1) \log \|z\|, \qquad
    \nabla K(z) = z \bigl(1 - (d-1)/\|z\|^2\bigr),

minimal over the radius at :math:`\|z\| = \sqrt{d-1}`. ReNO subtracts
:math:`\lambda_{\mathrm{reg}} K` from the reward so the optimised noise stays on the typical
set (L. Eyring et al., "ReNO: Enhancing One-step Text-to-Image Models through Reward-based
Noise Optimization", NeurIPS 2024, arXiv:2406.04312).

Choices: computed in float32 whatever the noise dtype (float64 stays float64), so a float16
noise of 16k entries stays finite.

Example::

    import torch
    from optforge.diffusion.reno import chi_norm_nll

    z = torch.randn(4, 4, 64, 64)
    chi_norm_nll(z)                    # [4], one penalty per sample
    chi_norm_nll(z, reduction="sum")   # scalar
"""

from __future__ import annotations

import torch
from torch import Tensor

from optforge._core import Reduction, check_choice

__all__ = ["chi_norm_nll"]


def chi_norm_nll(z: Tensor, *, reduction: Reduction = "none") -> Tensor:
    r"""Negative log chi-density of the per-sample noise norm, ``0.5 r² − (d−1) log r``.

    ``r = ‖z_b‖`` over all non-batch dimensions and ``d = z[0].numel()``. Computed in float32
    (float64 stays float64) so a float16 noise of 16k entries neither overflows nor gives
    ``-inf``. The gradient is ``z (1 − (d−1)/r²)``; the minimum over the radius is at
    ``r = sqrt(d − 1)``.

    Args:
        z: noise of shape ``[B, ...]`` (at least two dimensions, batch first).
        reduction: ``"none"`` (shape ``[B]``), ``"mean"`` or ``"sum"``.

    Returns:
        The penalty, float32 (or float64 for float64 input).
    """
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() < 2:
        raise ValueError(
            f"z must have a batch dimension first, shape [B, ...]; got {tuple(z.shape)}"
        )
    check_choice("reduction", reduction, ("none", "mean", "sum"))
    work = _acc(z)
    d = work[0].numel()
    r = torch.linalg.vector_norm(work.flatten(1), dim=1)
    value = 0.5 * r.square() - (d - 1) * torch.log(r) if d > 1 else 0.5 * r.square()
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value


def _acc(t: Tensor) -> Tensor:
    """Accumulation dtype: float64 stays float64, anything else becomes float32."""
    return t if t.dtype == torch.float64 else t.float()
