r"""The five batch-size tests: each proposes the batch size :math:`\hat b` at which the minibatch
gradient would be accurate enough.

From the statistics of the per-example gradients :math:`G_i` of a batch (``b`` examples, mean
:math:`g`, unbiased per-coordinate variances :math:`\mathrm{Var}_j`,
:math:`S = \sum_j \mathrm{Var}_j`, :math:`a_i = \langle G_i, g\rangle` over the **whole**
flattened parameter vector and :math:`r_i = G_i - (a_i/\|g\|^2) g`):

========================  =================================================================
``"norm"``                :math:`\hat b = S / (\eta^2 \|g\|^2)` (Byrd, Chin, Nocedal, Wu 2012)
``"inner_product"``       :math:`\hat b = \mathrm{Var}_i(a_i) / (\theta^2 \|g\|^4)`
``"orthogonality"``       :math:`\hat b = \sum_j \mathrm{Var}_i(r_{ij}) / (\nu^2 \|g\|^2)`
``"augmented_inner_product"``  the max of the two above (Bollapragada, Byrd, Nocedal 2018)
``"coordinate_norm"``     :math:`\hat b = \max_j \mathrm{Var}_j / (\eta^2 g_j^2)` (Lau, Liu,
                          Kolar 2024: the coordinate-wise test for AdaGrad)
========================  =================================================================

A denominator below ``min_denominator`` (e.g. :math:`g = 0`) gives :math:`\hat b = \infty`;
non-finite statistics raise ``ValueError``. ``coordinate_norm_test(reduce="quantile")`` (the
``q``-quantile of the per-coordinate ratios instead of their max) is an extension, not in the
paper.

Example::

    stats = GradStats.from_samples(G, ref=G.mean(0))   # G: (b, p) per-example gradients
    norm_test(stats, eta=0.5), augmented_inner_product_test(stats, theta=0.5, nu=0.5)
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from optforge._core import check_choice, check_in_range, check_positive
from optforge.optim.adadagrad.grad_stats import GradStats

__all__ = [
    "TESTS",
    "TestName",
    "augmented_inner_product_test",
    "coordinate_norm_test",
    "inner_product_test",
    "norm_test",
    "orthogonality_test",
]

TestName = Literal[
    "norm", "inner_product", "orthogonality", "augmented_inner_product", "coordinate_norm"
]
TESTS: tuple[str, ...] = (
    "norm",
    "inner_product",
    "orthogonality",
    "augmented_inner_product",
    "coordinate_norm",
)


def norm_test(stats: GradStats, eta: float, *, min_denominator: float = 1e-30) -> float:
    """Norm test proposal ``b̂ = S / (η² ‖g‖²)`` (Byrd, Chin, Nocedal, Wu 2012)."""
    check_positive("eta", eta)
    return _norm(stats, eta, min_denominator)


def inner_product_test(stats: GradStats, theta: float, *, min_denominator: float = 1e-30) -> float:
    """Inner-product test proposal ``b̂ = Var(a_i) / (θ² ‖g‖⁴)`` (Bollapragada et al. 2018)."""
    check_positive("theta", theta)
    return _inner_product(stats, theta, min_denominator)


def orthogonality_test(stats: GradStats, nu: float, *, min_denominator: float = 1e-30) -> float:
    """Orthogonality test proposal ``b̂ = Σ_j Var(r_ij) / (ν² ‖g‖²)``."""
    check_positive("nu", nu)
    return _orthogonality(stats, nu, min_denominator)


def augmented_inner_product_test(
    stats: GradStats, theta: float, nu: float, *, min_denominator: float = 1e-30
) -> float:
    """Augmented inner-product test: the max of the inner-product and orthogonality proposals."""
    check_positive("theta", theta)
    check_positive("nu", nu)
    return _augmented(stats, theta, nu, min_denominator)


# the proposals without the argument checks (the controller checks its values once)
def _norm(stats: GradStats, eta: float, min_denominator: float) -> float:
    return _ratio(stats.trace_variance, eta**2 * stats.grad_sq_norm, min_denominator)


def _inner_product(stats: GradStats, theta: float, min_denominator: float) -> float:
    g2 = stats.grad_sq_norm
    return _ratio(stats.ip_variance, theta**2 * g2 * g2, min_denominator)


def _orthogonality(stats: GradStats, nu: float, min_denominator: float) -> float:
    return _ratio(stats.orth_trace_variance, nu**2 * stats.grad_sq_norm, min_denominator)


def _augmented(stats: GradStats, theta: float, nu: float, min_denominator: float) -> float:
    return max(
        _inner_product(stats, theta, min_denominator),
        _orthogonality(stats, nu, min_denominator),
    )


def coordinate_norm_test(
    stats: GradStats,
    eta: float,
    *,
    reduce: Literal["max", "quantile"] = "max",
    q: float = 0.9,
    min_denominator: float = 1e-30,
) -> float:
    """Coordinate-wise norm test ``b̂ = max_j Var_j / (η² g_j²)`` (the paper's AdaGrad test).

    Coordinates with ``g_j² < min_denominator`` are skipped; if none is left, ``b̂ = ∞``.
    ``reduce="quantile"`` takes the ``q``-quantile of the ratios instead of their max — a
    robustness extension that is **not in the paper**.
    """
    check_positive("eta", eta)
    check_choice("reduce", reduce, ("max", "quantile"))
    check_in_range("q", q, 0.0, 1.0)
    var = stats.variance.double()
    g2 = stats.mean.double().pow(2)
    if not (torch.isfinite(var).all() and torch.isfinite(g2).all()):
        raise ValueError("stats: non-finite gradient statistics (NaN or inf)")
    keep = g2 >= min_denominator
    if not bool(keep.any()):
        return math.inf
    ratios = var[keep] / (eta**2 * g2[keep])
    if reduce == "max":
        return float(ratios.max())
    if ratios.numel() <= 2**24:
        return float(torch.quantile(ratios, q))
    return float(ratios.kthvalue(max(1, math.ceil(q * ratios.numel()))).values)


def _ratio(num: float, den: float, min_denominator: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)):
        raise ValueError(
            f"stats: non-finite gradient statistics (numerator {num}, denominator {den})"
        )
    return math.inf if den < min_denominator else num / den
