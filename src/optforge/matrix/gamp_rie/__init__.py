r"""GAMP-RIE and the Bayes-optimal error of extensive-width quadratic networks.

Paper: "Bayes-optimal learning of an extensive-width neural network from quadratically many
samples", A. Maillard, E. Troiani, S. Martin, F. Krzakala, L. Zdeborová (NeurIPS 2024),
arXiv 2408.03733. Official code: ``SPOC-group/ExtensiveWidthQuadraticSamples``.

**Problem.** A quadratic network of width ``m = κd`` seen through ``n = αd²`` samples is matrix
sensing of ``S° = W*ᵀW*/√(md)`` (paper units, see :mod:`optforge.matrix.quadratic_nets`):
``y_μ = ⟨Z_μ, S°⟩ + √Δ ξ_μ`` with ``Z_μ = (x_μx_μᵀ − I)/√d``. Errors are
``mse = ‖Ŝ − S°‖²_F / d`` (equal to 1 for the prior mean ``√κ I``).

**Denoising MMSE and RIE** (standard units ``S = WᵀW/m``; ``ρ_Δ``, ``h_Δ`` are the density and
Hilbert transform of the spectrum of ``S + √Δ·GOE``, from a cubic for its Stieltjes transform):

.. math::

    \mathrm{mmse}(\Delta) = \Delta - \tfrac{4\pi^2}{3}\Delta^2\!\int\rho_\Delta(x)^3\,dx,\qquad
    f_{\rm RIE}(R) = \sum_i \big(\lambda_i - 2\Delta\,h_\Delta(\lambda_i)\big) v_iv_i^\top .

Paper units: ``mmse°(Δ) = κ·mmse_std(Δ/κ)`` and ``f°(R) = √κ·f_std(R/√κ; Δ/κ)``.

**Bayes-optimal error** (state-evolution fixed point, paper units):

.. math::

    e = \mathrm{mmse}^\circ\!\Big(\frac{\Delta + 2e}{4\alpha}\Big),

the largest fixed point below 1 (where state evolution from ``e₀ = 1`` stops). Noiseless, it
is 0 for ``α ≥ α_PR = κ − κ²/2`` (κ ≤ 1; ``1/2`` for κ ≥ 1).

**GAMP-RIE** iterates an Onsager-corrected linear step through the sensing operators and the
RIE denoiser at the effective noise ``Δ_eff = 1/(2A)`` (see :func:`gamp_rie`).

One idea per module:

* :mod:`~optforge.matrix.gamp_rie.spectrum`: :class:`WishartGOESpectrum` and
  :func:`denoising_mmse`;
* :mod:`~optforge.matrix.gamp_rie.rie`: the denoiser :class:`RIEDenoiser`;
* :mod:`~optforge.matrix.gamp_rie.state_evolution`: :func:`state_evolution`,
  :func:`bayes_optimal_mse`, :func:`perfect_recovery_threshold`;
* :mod:`~optforge.matrix.gamp_rie.sensing`: :func:`sensing_forward`, :func:`sensing_adjoint`;
* :mod:`~optforge.matrix.gamp_rie.algorithm`: :func:`gamp_rie` and :class:`GampRieResult`.

Example:
    >>> import torch
    >>> from optforge.matrix import sample_quadratic_teacher, gamp_rie, bayes_optimal_mse
    >>> data = sample_quadratic_teacher(40, kappa=0.5, alpha=0.2,
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> result = gamp_rie(data.X, data.y, kappa=0.5, S_true=data.S)
    >>> round(float(bayes_optimal_mse(0.2, 0.5)), 3)
    0.392
"""

from optforge.matrix.gamp_rie.algorithm import GampRieDivergenceWarning, GampRieResult, gamp_rie
from optforge.matrix.gamp_rie.rie import RIEDenoiser
from optforge.matrix.gamp_rie.sensing import sensing_adjoint, sensing_forward
from optforge.matrix.gamp_rie.spectrum import WishartGOESpectrum, denoising_mmse
from optforge.matrix.gamp_rie.state_evolution import (
    bayes_optimal_mse,
    perfect_recovery_threshold,
    state_evolution,
)

__all__ = [
    "GampRieDivergenceWarning",
    "GampRieResult",
    "RIEDenoiser",
    "WishartGOESpectrum",
    "bayes_optimal_mse",
    "denoising_mmse",
    "gamp_rie",
    "perfect_recovery_threshold",
    "sensing_adjoint",
    "sensing_forward",
    "state_evolution",
]
