"""The Wishart ⊞ semicircle spectrum and the denoising MMSE (``gamp_rie.spectrum``)."""

import math

import numpy as np
import pytest
import torch
from _gamp_rie_helpers import _goe, _wishart_std

from optforge.matrix.gamp_rie import WishartGOESpectrum, denoising_mmse


@pytest.mark.parametrize(("kappa", "delta"), [(0.2, 0.1), (0.2, 1e-3), (0.5, 1.0), (2.0, 0.05)])
def test_density_integrates_to_one(kappa, delta):
    spec = WishartGOESpectrum(kappa)
    assert spec.integral_rho_power(delta, 1) == pytest.approx(1.0, abs=1e-3)


def test_two_intervals_when_atom_is_separated():
    # κ < 1: the atom at 0 is smoothed by weak noise into its own interval
    assert len(WishartGOESpectrum(0.2).support(1e-3)) == 2
    assert len(WishartGOESpectrum(0.5).support(1.0)) == 1


def test_density_matches_monte_carlo_spectrum():
    """Spec §7.1: eigenvalues of S_std + √Δ·GOE at d = 1000, κ = 0.2, Δ = 0.1 (KS < 0.05)."""
    gen = torch.Generator().manual_seed(0)
    d, kappa, delta = 1000, 0.2, 0.1
    y = _wishart_std(d, kappa, gen) + math.sqrt(delta) * _goe(d, gen)
    eig = np.sort(torch.linalg.eigvalsh(y).numpy())
    spec = WishartGOESpectrum(kappa)
    x, w = spec.quadrature(delta, 2000)
    order = np.argsort(x)
    cdf = np.cumsum((w * spec.density(x, delta))[order])
    theo = np.interp(eig, x[order], cdf)
    emp = np.arange(1, d + 1) / d
    assert np.max(np.abs(theo - emp)) < 0.05


def test_hilbert_outside_support_matches_quadrature():
    """The physical real root outside the bulk (the official code's weak spot, spec §8)."""
    spec = WishartGOESpectrum(0.5)
    for delta in (0.01, 1.0):
        x, w = spec.quadrature(delta)
        rho = spec.density(x, delta)
        sup = spec.support(delta)
        pts = [sup[0][0] - 0.3, sup[-1][1] + 0.3, sup[-1][1] + 5.0]
        if len(sup) > 1:
            pts.append(0.5 * (sup[0][1] + sup[1][0]))  # inside the gap
        quad = [float((w * rho / (p - x)).sum()) for p in pts]
        np.testing.assert_allclose(spec.hilbert(np.array(pts), delta), quad, rtol=1e-6)


def test_hilbert_inside_support_is_principal_value():
    spec = WishartGOESpectrum(1.0)
    delta = 0.5
    # semicircle-like check: compare with a principal-value quadrature on a fine grid
    x0 = 1.3
    x, w = spec.quadrature(delta, 4000)
    rho = spec.density(x, delta)
    rho0 = spec.density(np.array([x0]), delta)[0]
    pv = float((w * (rho - rho0) / (x0 - x)).sum())
    lo, hi = spec.support(delta)[0]
    pv += rho0 * math.log((x0 - lo) / (hi - x0))
    assert spec.hilbert(np.array([x0]), delta)[0] == pytest.approx(pv, abs=2e-4)


def test_denoising_mmse_reference_value():
    """The notebook's reference: κ = 0.5, Δ = 0.6 (paper units) gives 0.2839."""
    assert denoising_mmse(0.6, 0.5) == pytest.approx(0.2839, abs=1e-4)


def test_denoising_mmse_limits():
    k = 0.5
    assert denoising_mmse(1e-3, k, "standard") == pytest.approx(0.75e-3, rel=2e-3)
    assert denoising_mmse(100.0, k, "standard") == pytest.approx(1.96, abs=0.01)
    assert denoising_mmse(1e6, k, "paper") == pytest.approx(1.0, abs=1e-3)
    assert denoising_mmse(0.0, k) == 0.0


def test_gaussian_limit_of_mmse_formula():
    """Large κ: the Wishart tends to a semicircle of variance 1/κ; mmse → σ²Δ/(σ² + Δ)."""
    k, delta = 400.0, 0.01
    s2 = 1.0 / k
    assert denoising_mmse(delta, k, "standard") == pytest.approx(
        s2 * delta / (s2 + delta), rel=0.02
    )


def test_continuation_solves_every_step_of_the_path_at_once(monkeypatch) -> None:
    """The analytic continuation outside the support solves the cubic at all 48 steps of its
    path in one batched call (issue #34: was one call per step), with the same result as
    following the path one solve at a time."""
    from optforge.matrix.gamp_rie.spectrum import WishartGOESpectrum

    spec = WishartGOESpectrum(kappa=0.5)
    x = np.array([-1.5, 7.0, 9.0])  # outside the support at Δ = 0.1
    original = WishartGOESpectrum._roots
    calls: list[int] = []

    def counting(self, z, delta):
        calls.append(np.asarray(z).size)
        return original(self, z, delta)

    monkeypatch.setattr(WishartGOESpectrum, "_roots", counting)
    g = spec._continue(x, 0.1)
    assert calls == [48 * x.size]
    # reference: the path followed one solve per step
    big = 1e3 * (1.0 + 1.0 / spec.kappa + np.sqrt(0.1) + np.abs(x).max())
    etas = np.geomspace(big, 1e-13, 48)
    roots = original(spec, x - 1j * etas[0], 0.1)
    rows = np.arange(x.size)
    current = roots[rows, np.argmin(np.abs(roots - 1.0 / (x - 1j * etas[0])[:, None]), 1)]
    for eta in etas[1:]:
        roots = original(spec, x - 1j * eta, 0.1)
        current = roots[rows, np.argmin(np.abs(roots - current[:, None]), 1)]
    assert np.array_equal(g, current)


@pytest.mark.parametrize("kappa", [0.25, 0.5, 2.0])
def test_support_edges_are_the_polynomial_objects_roots_bit_for_bit(kappa) -> None:
    """The support's discriminant is built with the polynomial functions directly (issue #34:
    one ``Polynomial`` object per operation cost more than the roots); the roots are exactly
    those of the ``Polynomial`` expression."""
    from optforge.matrix.gamp_rie.spectrum import _discriminant_roots

    P = np.polynomial.Polynomial
    for delta in np.geomspace(1e-6, 10.0, 25):
        k = kappa
        a, b, c, e = P([delta]), P([-k * delta, -1.0]), P([1 - k, k]), P([-k])
        disc = 18 * a * b * c * e - 4 * b**3 * e + b**2 * c**2 - 4 * a * c**3 - 27 * a**2 * e**2
        assert np.array_equal(_discriminant_roots(float(delta), k), disc.roots())


@pytest.mark.parametrize("kappa", [0.25, 0.5, 2.0])
def test_support_one_density_call_same_intervals(kappa, monkeypatch) -> None:
    """Issue #34: the support tests every gap's midpoint in one density call; the intervals are
    those of one call per midpoint (the former loop, as reference), bit for bit."""
    import itertools

    from optforge.matrix.gamp_rie.spectrum import _discriminant_roots

    spec = WishartGOESpectrum(kappa)
    calls = []
    real_density = WishartGOESpectrum.density

    def counting(self, x, delta):
        calls.append(np.size(x))
        return real_density(self, x, delta)

    for delta in np.geomspace(1e-6, 10.0, 15):
        delta = float(delta)
        roots = _discriminant_roots(delta, kappa)
        real = np.sort(roots.real[np.abs(roots.imag) <= 1e-6 * (1.0 + np.abs(roots))])
        ref: list[tuple[float, float]] = []
        for lo, hi in itertools.pairwise(real):
            if hi - lo > 0 and spec.density(np.array([0.5 * (lo + hi)]), delta)[0] > 0:
                if ref and abs(ref[-1][1] - lo) <= 1e-12 * (1 + abs(lo)):
                    ref[-1] = (ref[-1][0], float(hi))
                else:
                    ref.append((float(lo), float(hi)))
        monkeypatch.setattr(WishartGOESpectrum, "density", counting)
        calls.clear()
        got = WishartGOESpectrum.support.__wrapped__(spec, delta)  # bypass the cache
        monkeypatch.setattr(WishartGOESpectrum, "density", real_density)
        assert got == tuple(ref)
        assert calls == [len(real) - 1]
