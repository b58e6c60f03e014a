r"""Spectrum of a Wishart matrix plus GOE noise, and its denoising MMSE (standard units).

In standard units ``S = WᵀW/m`` (``W ∈ R^{m×d}`` Gaussian, ``m = κd``) has mean eigenvalue 1
and a Marchenko–Pastur spectrum of ratio ``d/m = 1/κ``. The observation ``Y = S + √Δ ξ``
(ξ a GOE with off-diagonal variance 1/d) has a Stieltjes transform
``g(z) = ∫ρ(x)dx/(z − x)`` that solves the cubic

.. math::

    \Delta g^3 - (z + \kappa\Delta) g^2 + (1 - \kappa + \kappa z) g - \kappa = 0

(a quadratic, the Marchenko–Pastur law, for Δ = 0). Inside the support the physical root is
the one with the largest imaginary part (``ρ = Im g(x − i0)/π``, ``h = Re g``). Outside the
support all roots are real: the physical one is found by analytic continuation from ``x − iL``
(where ``g ≈ 1/z``) down to the real axis. The support edges are the real roots of the cubic's
discriminant (a quartic in ``z``); integrals over ``ρ`` use a Chebyshev substitution on each
interval, so the square-root edges and the narrow bump that replaces the atom at 0 of a
rank-deficient Wishart (κ < 1) are resolved at any Δ. The denoising MMSE (per ``‖·‖²_F/d``) is

.. math::

    \mathrm{mmse}(\Delta) = \Delta - \tfrac{4\pi^2}{3}\Delta^2\!\int\rho_\Delta(x)^3\,dx,

and in paper units (``S° = √κ·S``) ``mmse°(Δ) = κ·mmse_std(Δ/κ)``.

Reference: A. Maillard, E. Troiani, S. Martin, F. Krzakala, L. Zdeborová, "Bayes-optimal
learning of an extensive-width neural network from quadratically many samples" (NeurIPS 2024,
arXiv 2408.03733).

Example:
    >>> import numpy as np
    >>> from optforge.matrix.gamp_rie import WishartGOESpectrum, denoising_mmse
    >>> spec = WishartGOESpectrum(kappa=0.5)
    >>> round(spec.integral_rho_power(0.25, power=1), 6)  # the density integrates to 1
    1.0
    >>> rho = spec.density(np.linspace(0.0, 6.0, 7), 0.25)
    >>> denoising_mmse(0.25, kappa=0.5) < 0.25
    True
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.polynomial import polynomial as npp
from numpy.polynomial import polyutils as pu
from torch import Tensor

from optforge._core import check_nonnegative, check_positive

__all__ = ["WishartGOESpectrum", "denoising_mmse"]

_QUAD_NODES = 600  # Chebyshev nodes per support interval
_EDGE_REL_TOL = 1e-7


class WishartGOESpectrum:
    """Spectrum of ``Y = S + √Δ·GOE`` for a standard-unit Wishart ``S = WᵀW/m``, ``m = κd``.

    All methods work in standard units (mean eigenvalue of S is 1, the MP ratio is ``d/m = 1/κ``).
    Δ = 0 is the plain Marchenko–Pastur law (the quadratic limit of the cubic).

    Args:
        kappa: Width ratio κ > 0.
    """

    def __init__(self, kappa: float) -> None:
        self.kappa = float(check_positive("kappa", kappa))

    # -- roots ------------------------------------------------------------------------------
    def _roots(self, z: np.ndarray, delta: float) -> np.ndarray:
        """All roots in g of the cubic (quadratic if Δ = 0) at each ``z``, shape ``(N, 3|2)``."""
        k = self.kappa
        z = np.asarray(z, dtype=np.complex128).ravel()
        if delta == 0.0:  # −z g² + (1 − κ + κz) g − κ = 0
            a, b, c = -z, 1 - k + k * z, -k * np.ones_like(z)
            sq = np.sqrt(b * b - 4 * a * c)
            return np.stack([(-b + sq) / (2 * a), (-b - sq) / (2 * a)], axis=1)
        p2 = -(z + k * delta) / delta
        p1 = (1 - k + k * z) / delta
        p0 = -k / delta * np.ones_like(z)
        comp = np.zeros((z.size, 3, 3), dtype=np.complex128)
        comp[:, 0, 0], comp[:, 0, 1], comp[:, 0, 2] = -p2, -p1, -p0
        comp[:, 1, 0] = 1.0
        comp[:, 2, 1] = 1.0
        r = np.linalg.eigvals(comp)
        for _ in range(2):  # Newton polish (the companion eigenvalues lose digits for tiny Δ)
            f = ((r + p2[:, None]) * r + p1[:, None]) * r + p0[:, None]
            df = (3 * r + 2 * p2[:, None]) * r + p1[:, None]
            ok = np.abs(df) > 1e-300
            r = np.where(ok, r - f / np.where(ok, df, 1.0), r)
        return r

    def _inside(self, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.argmax(roots.imag, axis=1)
        best = roots[np.arange(roots.shape[0]), idx]
        return best, best.imag > _EDGE_REL_TOL * (1.0 + np.abs(best))

    def stieltjes(self, x: np.ndarray | Tensor | float, delta: float) -> np.ndarray:
        """The physical ``g(x − i0⁺)`` at real points ``x`` (complex array, ``Im g = πρ ≥ 0``).

        Args:
            x: Real points (any shape; flattened).
            delta: Noise variance Δ ≥ 0 (standard units).

        Returns:
            Complex array of the same size as ``x``.
        """
        check_nonnegative("delta", delta)
        xs = _as_numpy(x).ravel()
        roots = self._roots(xs, delta)
        g, inside = self._inside(roots)
        outside = ~inside
        if outside.any():
            g[outside] = self._continue(xs[outside], delta).real
        return g

    def _continue(self, x: np.ndarray, delta: float) -> np.ndarray:
        """Follow the physical root from ``x − iL`` (``g ≈ 1/z``) down to ``x − i·1e-13``."""
        big = 1e3 * (1.0 + 1.0 / self.kappa + math.sqrt(delta) + np.abs(x).max())
        etas = np.geomspace(big, 1e-13, 48)
        # The roots at every step of the path do not depend on the path's picks: one batched
        # solve for all 48 steps (each point's companion matrix is solved on its own, so the
        # roots are the same as 48 separate solves).
        path = self._roots((x[None, :] - 1j * etas[:, None]).ravel(), delta)
        path = path.reshape(etas.size, x.size, -1)
        rows = np.arange(x.size)
        roots = path[0]
        current = roots[rows, np.argmin(np.abs(roots - 1.0 / (x - 1j * etas[0])[:, None]), 1)]
        for roots in path[1:]:
            pick = np.argmin(np.abs(roots - current[:, None]), axis=1)
            current = roots[rows, pick]
        return current

    def density(self, x: np.ndarray | Tensor | float, delta: float) -> np.ndarray:
        """Spectral density ``ρ_Δ(x)`` (0 outside the support)."""
        check_nonnegative("delta", delta)
        xs = _as_numpy(x).ravel()
        best, inside = self._inside(self._roots(xs, delta))
        return np.where(inside, best.imag / math.pi, 0.0)

    def hilbert(self, x: np.ndarray | Tensor | float, delta: float) -> np.ndarray:
        """Hilbert transform ``h_Δ(x) = P.V.∫ρ(t)dt/(x − t) = Re g(x − i0⁺)``."""
        return self.stieltjes(x, delta).real

    @lru_cache(maxsize=4096)  # noqa: B019 - small immutable object, keyed by (κ, Δ)
    def support(self, delta: float) -> tuple[tuple[float, float], ...]:
        """The support of ``ρ_Δ`` as disjoint intervals (one or two).

        The edges are the real roots of the discriminant of the cubic (a quartic in z; for
        Δ = 0 the Marchenko–Pastur edges ``(1 ± κ^{-1/2})²``).
        """
        check_nonnegative("delta", delta)
        k = self.kappa
        if delta == 0.0:
            lo, hi = (1 - 1 / math.sqrt(k)) ** 2, (1 + 1 / math.sqrt(k)) ** 2
            return ((lo, hi),)
        roots = _discriminant_roots(delta, k)
        scale = 1.0 + np.abs(roots)
        real = np.sort(roots.real[np.abs(roots.imag) <= 1e-6 * scale])
        # the density at every gap's midpoint in one call (each point's roots are solved on
        # their own: the same values as one call per midpoint)
        mids = 0.5 * (real[:-1] + real[1:])
        rho_mid = self.density(mids, delta) if mids.size else mids
        intervals: list[tuple[float, float]] = []
        for (lo, hi), rho in zip(itertools.pairwise(real), rho_mid, strict=True):
            if hi - lo <= 0:
                continue
            if rho > 0:
                if intervals and abs(intervals[-1][1] - lo) <= 1e-12 * (1 + abs(lo)):
                    intervals[-1] = (intervals[-1][0], float(hi))  # spurious root inside
                else:
                    intervals.append((float(lo), float(hi)))
        if not intervals:  # numerically degenerate: one generous interval
            r = 2 * math.sqrt(delta)
            intervals = [(-r - 1.0, (1 + 1 / math.sqrt(k)) ** 2 + r + 1.0)]
        return tuple(intervals)

    def quadrature(self, delta: float, n_nodes: int = _QUAD_NODES) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and weights for ``∫ f(x) ρ-support dx`` (Chebyshev substitution per interval)."""
        theta = (np.arange(n_nodes) + 0.5) * math.pi / n_nodes
        xs, ws = [], []
        for lo, hi in self.support(float(delta)):
            mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
            xs.append(mid + half * np.cos(theta))
            ws.append(half * np.sin(theta) * math.pi / n_nodes)
        return np.concatenate(xs), np.concatenate(ws)

    def integral_rho_power(self, delta: float, power: int = 3) -> float:
        """``∫ ρ_Δ(x)^power dx`` (power 1 checks the normalisation)."""
        x, w = self.quadrature(delta)
        return float((w * self.density(x, delta) ** power).sum())

    def mmse(self, delta: float) -> float:
        """Denoising MMSE ``Δ − (4π²/3)Δ²∫ρ³`` (per ``‖·‖²_F/d``, standard units)."""
        return _mmse_std(self.kappa, float(check_nonnegative("delta", delta)))

    def __hash__(self) -> int:
        return hash(("WishartGOESpectrum", self.kappa))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WishartGOESpectrum) and other.kappa == self.kappa


def denoising_mmse(
    delta: float, kappa: float, units: Literal["paper", "standard"] = "paper"
) -> float:
    """Extensive-rank denoising MMSE of the Wishart prior under GOE noise of variance Δ.

    Args:
        delta: Noise variance Δ ≥ 0 (in ``units``).
        kappa: Width ratio κ > 0.
        units: ``"paper"`` (``S° = √κ·S_std``; MMSE → 1 as Δ → ∞) or ``"standard"`` (→ 1/κ).

    Returns:
        ``‖Ŝ − S‖²_F/d`` of the Bayes-optimal denoiser, in ``units``.
    """
    check_positive("kappa", kappa)
    check_nonnegative("delta", delta)
    if units == "standard":
        return _mmse_std(float(kappa), float(delta))
    if units == "paper":
        return float(kappa) * _mmse_std(float(kappa), float(delta) / kappa)
    raise ValueError(f"units must be 'paper' or 'standard', got {units!r}")


_WINDOW = np.array([-1.0, 1.0])


def _discriminant_roots(delta: float, k: float) -> np.ndarray:
    """Roots in z of the discriminant ``18abce − 4b³e + b²c² − 4ac³ − 27a²e²`` of the cubic
    ``a g³ + b g² + c g + e`` with ``a = Δ``, ``b = −(z + κΔ)``, ``c = 1 − κ + κz``, ``e = −κ``.

    The same operations, in the same order, as with ``np.polynomial.Polynomial`` objects: their
    operators call ``polymul``/``polypow``/``polyadd``/``polysub``, which are ``np.convolve`` and
    elementwise sums on trimmed float64 copies (``_mul``/``_pow``/``_add``/``_sub`` below do those
    steps without the argument conversion), so the roots are bit-identical (issue #34: the
    support is recomputed for every new Δ).
    """
    a, b, c, e = _f64([delta]), _f64([-k * delta, -1.0]), _f64([1 - k, k]), _f64([-k])
    t1 = _mul(_mul(_mul(_mul(_f64([18]), a), b), c), e)
    t2 = _mul(_mul(_f64([4]), _pow(b, 3)), e)
    t3 = _mul(_pow(b, 2), _pow(c, 2))
    t4 = _mul(_mul(_f64([4]), a), _pow(c, 3))
    t5 = _mul(_mul(_f64([27]), _pow(a, 2)), _pow(e, 2))
    disc = _sub(_sub(_add(_sub(t1, t2), t3), t4), t5)
    return pu.mapdomain(npp.polyroots(disc), _WINDOW, _WINDOW)  # Polynomial.roots' mapping


def _f64(c: list[float]) -> np.ndarray:
    return np.array(c, dtype=np.float64)


def _series(c: np.ndarray) -> np.ndarray:
    """``polyutils.as_series`` of one float64 series: a trimmed copy."""
    return np.array(pu.trimseq(c), dtype=np.float64)


def _mul(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:  # npp.polymul
    return pu.trimseq(np.convolve(_series(c1), _series(c2)))


def _pow(c: np.ndarray, power: int) -> np.ndarray:  # npp.polypow (power >= 2): untrimmed
    c = _series(c)
    prd = c
    for _ in range(2, power + 1):
        prd = np.convolve(prd, c)
    return prd


def _add(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:  # npp.polyadd (polyutils._add)
    c1, c2 = _series(c1), _series(c2)
    if len(c1) > len(c2):
        c1[: c2.size] += c2
        ret = c1
    else:
        c2[: c1.size] += c1
        ret = c2
    return pu.trimseq(ret)


def _sub(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:  # npp.polysub (polyutils._sub)
    c1, c2 = _series(c1), _series(c2)
    if len(c1) > len(c2):
        c1[: c2.size] -= c2
        ret = c1
    else:
        c2 = -c2
        c2[: c1.size] += c1
        ret = c2
    return pu.trimseq(ret)


@lru_cache(maxsize=65536)
def _mmse_std(kappa: float, delta: float) -> float:
    if delta == 0.0:
        return 0.0
    spec = _spectrum(kappa)
    value = delta - (4 * math.pi**2 / 3) * delta**2 * spec.integral_rho_power(delta, 3)
    variance = 1.0 / kappa  # the prior's spectral variance bounds the MMSE
    return float(min(max(value, 0.0), delta, variance))


@lru_cache(maxsize=64)
def _spectrum(kappa: float) -> WishartGOESpectrum:
    return WishartGOESpectrum(kappa)


def _as_numpy(x: np.ndarray | Tensor | float) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=float)
    if not np.isfinite(arr).all():
        raise ValueError("x contains non-finite values")
    return arr
