r"""Rotation-invariant estimator (RIE) of a Wishart matrix observed under GOE noise.

For ``R = S + √Δ ξ`` with eigendecomposition ``R = Σ_i λ_i v_i v_iᵀ`` the Bayes-optimal
rotation-invariant denoiser keeps the eigenvectors and shrinks the eigenvalues,

.. math::

    f_{\rm RIE}(R) = \sum_i \big(\lambda_i - 2\Delta\,h_\Delta(\lambda_i)\big) v_iv_i^\top,

where ``h_Δ`` is the Hilbert transform of the spectral density of ``R``
(:class:`~optforge.matrix.gamp_rie.WishartGOESpectrum`). Its asymptotic error is
:func:`~optforge.matrix.gamp_rie.denoising_mmse`. In paper units (``S° = √κ·S_std``)
``f°(R) = √κ·f_std(R/√κ; Δ/κ)``.

Choices: ``mode="oracle"`` uses the Wishart ⊞ semicircle law (needs κ); the prior-free
``mode="empirical"`` estimates ``h`` from R's own eigenvalues with a Cauchy kernel of width
``η = d^{-1/2}·std(λ)`` and is experimental (not used by GAMP-RIE).

Reference: Maillard, Troiani, Martin, Krzakala, Zdeborová (NeurIPS 2024, arXiv 2408.03733);
Bun, Bouchaud, Potters, "Cleaning large correlation matrices" (Phys. Rep. 2017).

Example:
    >>> import torch
    >>> from optforge.matrix.gamp_rie import RIEDenoiser
    >>> g = torch.Generator().manual_seed(0)
    >>> W = torch.randn(20, 40, generator=g, dtype=torch.float64)
    >>> S = W.T @ W / (20 * 40) ** 0.5                          # paper units, kappa = 0.5
    >>> A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    >>> R = S + 0.5 * (A + A.T) / (2 * 40) ** 0.5              # GOE noise at Δ = 0.25
    >>> RIEDenoiser(kappa=0.5)(R, 0.25).shape
    torch.Size([40, 40])
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import check_choice, check_finite, check_nonnegative, check_positive
from optforge.matrix.gamp_rie.spectrum import _spectrum, denoising_mmse

__all__ = ["RIEDenoiser"]


class RIEDenoiser(nn.Module):
    """Rotation-invariant estimator of a Wishart matrix observed under GOE noise.

    ``f(R) = Σ_i (λ_i − 2Δ h_Δ(λ_i)) v_i v_iᵀ`` with ``R = Σ λ_i v_i v_iᵀ`` (``torch.linalg.eigh``
    of the symmetrised R; batched ``(B, d, d)`` input works). ``mode="oracle"`` uses the
    Wishart ⊞ semicircle law (needs κ), ``"empirical"`` estimates ``h`` from R's eigenvalues.

    Args:
        kappa: Width ratio κ > 0 of the Wishart prior.
        units: ``"paper"`` (``S° = WᵀW/√(md)``) or ``"standard"`` (``S = WᵀW/m``).
        mode: ``"oracle"`` or ``"empirical"``.
    """

    def __init__(
        self,
        kappa: float,
        units: Literal["paper", "standard"] = "paper",
        mode: Literal["oracle", "empirical"] = "oracle",
    ) -> None:
        super().__init__()
        self.kappa = float(check_positive("kappa", kappa))
        check_choice("units", units, ("paper", "standard"))
        check_choice("mode", mode, ("oracle", "empirical"))
        self.units = units
        self.mode = mode
        self.spectrum = _spectrum(self.kappa)

    def forward(self, R: Tensor, delta: float) -> Tensor:
        """Denoise ``R`` (``(d, d)`` or ``(B, d, d)``, real) at noise variance ``delta``."""
        check_nonnegative("delta", delta)
        R = _check_square(R, "R")
        asym = float((R - R.transpose(-1, -2)).abs().max()) if R.numel() else 0.0
        if asym > 1e-6 * (1.0 + float(R.abs().max())):
            warnings.warn(
                f"R is not symmetric (max |R − Rᵀ| = {asym:.2e}); using (R + Rᵀ)/2",
                stacklevel=2,
            )
        R = 0.5 * (R + R.transpose(-1, -2))
        if delta == 0.0:
            return R.clone()
        lam, vec = torch.linalg.eigh(R)
        shrunk = self.eigenvalue_map(lam, delta)
        return (vec * shrunk.unsqueeze(-2)) @ vec.transpose(-1, -2)

    def eigenvalue_map(self, lam: Tensor, delta: float) -> Tensor:
        """``ξ(λ) = λ − 2Δ h(λ)`` for eigenvalues ``lam`` (``(..., d)``)."""
        scale = math.sqrt(self.kappa) if self.units == "paper" else 1.0
        dstd = delta / scale**2
        lam_std = lam / scale
        if self.mode == "oracle":
            h = self.spectrum.hilbert(lam_std.detach().cpu().double().numpy(), dstd)
            h_t = torch.from_numpy(h).reshape(lam.shape).to(lam)
        else:
            h_t = _empirical_hilbert(lam_std)
        return scale * (lam_std - 2 * dstd * h_t)

    def mmse(self, delta: float) -> float:
        """The denoiser's asymptotic error ``‖f(R) − S‖²_F/d`` in this denoiser's units."""
        return denoising_mmse(delta, self.kappa, self.units)


def _empirical_hilbert(lam: Tensor) -> Tensor:
    d = lam.shape[-1]
    eta = d**-0.5 * lam.std(dim=-1, keepdim=True).clamp_min(1e-12)
    diff = lam.unsqueeze(-1) - lam.unsqueeze(-2)
    kern = diff / (diff**2 + eta.unsqueeze(-1) ** 2)  # diagonal is 0
    return kern.sum(-1) / d


def _check_square(R: Tensor, name: str) -> Tensor:
    if not isinstance(R, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.is_complex():
        raise ValueError(f"{name} must be real, got dtype {R.dtype}")
    if R.ndim < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"{name} must be square (..., d, d), got shape {tuple(R.shape)}")
    check_finite(name, R)
    return R
