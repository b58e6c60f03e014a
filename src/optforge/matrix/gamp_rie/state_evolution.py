r"""Bayes-optimal error of extensive-width quadratic networks: state evolution and its fixed point.

With ``n = αd²`` samples and label noise Δ (paper units), GAMP-RIE's state evolution is

.. math::

    e_{t+1} = \mathrm{mmse}^\circ\!\Big(\frac{\Delta + 2e_t}{4\alpha}\Big),\qquad e_0 = 1,

and the Bayes-optimal error ``‖Ŝ − S°‖²_F/d`` is its limit: the largest fixed point in
``[0, 1]``. Noiseless, it is 0 for ``α ≥ α_PR = κ − κ²/2`` (κ ≤ 1; ``1/2`` for κ ≥ 1):
``mmse°(Δ) ≤ 2α_PR·Δ``, its tangent at 0 (``mmse_std(Δ) ≈ 2(κ − κ²/2)Δ`` for small Δ; the
tests check the bound on a grid), so ``mmse°(2e/(4α)) ≤ (α_PR/α)·e < e`` for every ``e > 0``
once ``α > α_PR``, and 0 is the only fixed point. :func:`bayes_optimal_mse` computes the
fixed point there too (it finds no root in ``[1e-12, 1]`` and returns 0); ``shortcut=True``
skips that search with the closed form.

Reference: Maillard, Troiani, Martin, Krzakala, Zdeborová (NeurIPS 2024, arXiv 2408.03733).

Example:
    >>> from optforge.matrix.gamp_rie import (
    ...     bayes_optimal_mse, perfect_recovery_threshold, state_evolution)
    >>> round(float(bayes_optimal_mse(0.2, 0.5)), 3)
    0.392
    >>> perfect_recovery_threshold(0.5)
    0.375
    >>> traj = state_evolution(0.2, 0.5, n_iter=50)   # e_0 = 1 → ≈ 0.392
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import brentq

from optforge._core import check_choice, check_nonnegative, check_positive, check_positive_int
from optforge.matrix.gamp_rie.spectrum import denoising_mmse

__all__ = ["bayes_optimal_mse", "perfect_recovery_threshold", "state_evolution"]


def perfect_recovery_threshold(kappa: float) -> float:
    """Noiseless perfect-recovery threshold ``α_PR = κ − κ²/2`` (κ ≤ 1), ``1/2`` (κ ≥ 1)."""
    check_positive("kappa", kappa)
    return float(kappa - kappa**2 / 2) if kappa <= 1 else 0.5


def state_evolution(
    alpha: float, kappa: float, delta: float = 0.0, n_iter: int = 100, e0: float = 1.0
) -> np.ndarray:
    """State evolution of GAMP-RIE: ``e_{t+1} = mmse°((Δ + 2e_t)/(4α))`` (paper units).

    Args:
        alpha: Sample ratio α > 0.
        kappa: Width ratio κ > 0.
        delta: Label-noise variance Δ ≥ 0 (paper units).
        n_iter: Number of iterations.
        e0: Initial error (1 = the prior mean).

    Returns:
        The trajectory ``[e_0, …, e_{n_iter}]``.
    """
    check_positive("alpha", alpha)
    check_positive("kappa", kappa)
    check_nonnegative("delta", delta)
    check_positive_int("n_iter", n_iter)
    check_nonnegative("e0", e0)
    traj = [float(e0)]
    for _ in range(n_iter):
        traj.append(_se_map(traj[-1], alpha, kappa, delta))
    return np.asarray(traj)


def bayes_optimal_mse(
    alpha: float | np.ndarray | list[float],
    kappa: float,
    delta: float = 0.0,
    units: Literal["paper", "standard"] = "paper",
    *,
    shortcut: bool = False,
) -> np.ndarray:
    """Bayes-optimal ``‖Ŝ − S‖²_F/d`` for ``n = αd²`` samples (the paper's MMSE curve).

    Solves ``e = mmse°((Δ + 2e)/(4α))`` for its largest root in ``[0, 1]`` (state evolution's
    limit from ``e₀ = 1``): the sign of ``mmse°((Δ + 2e)/(4α)) − e`` is scanned on a log grid
    of ``e`` from 1 down to 1e-12 and the first sign change is refined with
    ``scipy.optimize.brentq``. Without a sign change the largest fixed point is below 1e-12 and
    0 is returned (noiseless, ``α ≥ α_PR``: the map is a contraction to 0, see the module doc).

    Args:
        alpha: Sample ratio(s) α > 0.
        kappa: Width ratio κ > 0.
        delta: Label-noise variance Δ ≥ 0, in ``units``.
        units: ``"paper"`` (default) or ``"standard"`` (``Δ_std = Δ°/κ``, ``MSE_std = MSE°/κ``).
        shortcut: Return 0 without the search when ``Δ = 0`` and ``α ≥ α_PR`` (the closed form
            derived in the module doc; the tests check it against the computation). Saves about
            50 spectral integrals per α above the threshold.

    Returns:
        Array of the same shape as ``alpha``.
    """
    check_positive("kappa", kappa)
    check_nonnegative("delta", delta)
    check_choice("units", units, ("paper", "standard"))
    alphas = np.asarray(alpha, dtype=float)
    delta_p = delta * kappa if units == "standard" else float(delta)
    out = np.empty(alphas.shape)
    for i, a in np.ndenumerate(alphas):
        check_positive("alpha", float(a))
        out[i] = _fixed_point(float(a), float(kappa), delta_p, shortcut)
    return out / kappa if units == "standard" else out


def _se_map(e: float, alpha: float, kappa: float, delta: float) -> float:
    return denoising_mmse((delta + 2 * e) / (4 * alpha), kappa, "paper")


def _fixed_point(alpha: float, kappa: float, delta: float, shortcut: bool = False) -> float:
    if shortcut and delta == 0.0 and alpha >= perfect_recovery_threshold(kappa):
        return 0.0

    def f(e: float) -> float:
        return _se_map(e, alpha, kappa, delta) - e

    grid = np.geomspace(1.0, 1e-12, 49)
    prev, f_prev = grid[0], f(grid[0])
    if f_prev >= 0:
        return float(prev)
    for e in grid[1:]:
        fe = f(e)
        if fe >= 0:
            return float(brentq(f, e, prev, xtol=1e-12, rtol=1e-10))
        prev, f_prev = e, fe
    return 0.0  # no fixed point in [1e-12, 1]: the largest one is 0 (a noiseless, α ≥ α_PR case)
