"""Tests of GAMP-RIE, the RIE denoiser, the spectral tools and the theory (spec gamp_rie.md §7)."""

import math

import numpy as np
import pytest
import torch

from optforge.matrix.gamp_rie import (
    RIEDenoiser,
    WishartGOESpectrum,
    bayes_optimal_mse,
    denoising_mmse,
    gamp_rie,
    perfect_recovery_threshold,
    sensing_adjoint,
    sensing_forward,
    state_evolution,
)
from optforge.matrix.quadratic_nets import (
    QuadraticNet,
    sample_quadratic_teacher,
    train_gd_ensemble,
)


def _goe(d, gen):
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return (a + a.T) / math.sqrt(2 * d)  # off-diagonal variance 1/d


def _wishart_std(d, kappa, gen):
    m = round(kappa * d)
    w = torch.randn(m, d, generator=gen, dtype=torch.float64)
    return w.T @ w / m


# ---- spectral tools ----------------------------------------------------------------------------


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


# ---- denoising MMSE and RIE --------------------------------------------------------------------


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


def test_units_identity():
    """Spec §7.4: mmse°(Δ) = κ·mmse_std(Δ/κ), and the two denoisers agree after rescaling."""
    k = 0.3
    for delta in (0.05, 0.7, 4.0):
        assert denoising_mmse(delta, k, "paper") == pytest.approx(
            k * denoising_mmse(delta / k, k, "standard"), abs=1e-12
        )
    gen = torch.Generator().manual_seed(1)
    r = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    r = (r + r.T) / 2
    paper = RIEDenoiser(k, units="paper")(r, 0.4)
    std = RIEDenoiser(k, units="standard")(r / math.sqrt(k), 0.4 / k) * math.sqrt(k)
    torch.testing.assert_close(paper, std, rtol=1e-9, atol=1e-10)


@pytest.mark.slow
def test_rie_reaches_mmse_at_d1000():
    """Spec §7.2: d = 1000, κ = 0.5, Δ = 0.6 (paper units): error within 2% of 0.2839."""
    gen = torch.Generator().manual_seed(0)
    data = sample_quadratic_teacher(1000, 0.5, 1e-5, generator=gen)
    r = data.S + math.sqrt(0.6) * _goe(1000, gen)
    err = data.mse(RIEDenoiser(0.5)(r, 0.6))
    assert err == pytest.approx(denoising_mmse(0.6, 0.5), rel=0.02)


def test_rie_beats_naive_estimators_at_d200():
    gen = torch.Generator().manual_seed(3)
    data = sample_quadratic_teacher(200, 0.5, 1e-4, generator=gen)
    r = data.S + math.sqrt(1.0) * _goe(200, gen)
    err = data.mse(RIEDenoiser(0.5)(r, 1.0))
    assert err == pytest.approx(denoising_mmse(1.0, 0.5), rel=0.05)
    assert err < min(data.mse(r), data.mse(math.sqrt(0.5) * torch.eye(200, dtype=r.dtype)))
    emp = data.mse(RIEDenoiser(0.5, mode="empirical")(r, 1.0))
    assert emp < data.mse(r)  # the prior-free variant still denoises


def test_rie_limits_and_equivariance():
    gen = torch.Generator().manual_seed(2)
    d, k = 40, 0.5
    data = sample_quadratic_teacher(d, k, 0.01, generator=gen)
    r = data.S + 0.3 * _goe(d, gen)
    den = RIEDenoiser(k)
    torch.testing.assert_close(den(r, 1e-9), r, atol=1e-6, rtol=0)
    far = den(r, 1e6)
    torch.testing.assert_close(far, math.sqrt(k) * torch.eye(d, dtype=r.dtype), atol=2e-2, rtol=0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(den(q @ r @ q.T, 0.2), q @ den(r, 0.2) @ q.T, atol=1e-9, rtol=0)
    batched = den(torch.stack([r, q @ r @ q.T]), 0.2)
    torch.testing.assert_close(batched[0], den(r, 0.2), atol=1e-10, rtol=0)


def test_rie_input_checks():
    den = RIEDenoiser(0.5)
    r = torch.randn(5, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match="not symmetric"):
        out = den(r, 0.1)
    torch.testing.assert_close(out, out.T)
    with pytest.raises(ValueError, match="R"):
        den(torch.full((3, 3), float("nan"), dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="real"):
        den(torch.eye(3, dtype=torch.complex128), 0.1)
    with pytest.raises(ValueError, match="square"):
        den(torch.zeros(3, 4), 0.1)
    with pytest.raises(ValueError, match="delta"):
        den(torch.eye(3), -1.0)
    with pytest.raises(ValueError, match="kappa"):
        RIEDenoiser(0.0)


# ---- theory ------------------------------------------------------------------------------------


SPEC_TABLE = {
    (0.5, 0.0): [0.879, 0.724, 0.555, 0.392, 0.247, 0.128, 0.039, 0.0, 0.0],
    (1.0, 0.0): [0.890, 0.765, 0.632, 0.500, 0.375, 0.262, 0.164, 0.084, 0.027],
    (0.5, 0.25): [0.896, 0.770, 0.638, 0.518, 0.416, 0.336, 0.274, 0.227, 0.191],
    (2.0, 0.0): [0.895, 0.783, 0.667, 0.551, 0.438, 0.330, 0.229, 0.139, 0.061],
}


@pytest.mark.parametrize(("kappa", "delta"), list(SPEC_TABLE))
def test_bayes_curve_matches_spec_table(kappa, delta):
    alphas = 0.05 * np.arange(1, 10)
    np.testing.assert_allclose(
        bayes_optimal_mse(alphas, kappa, delta), SPEC_TABLE[(kappa, delta)], atol=2e-3
    )


def test_bayes_curve_official_csv_points():
    np.testing.assert_allclose(
        bayes_optimal_mse([0.095, 0.190, 0.284, 0.331], 0.5),
        [0.739, 0.425, 0.164, 0.070],
        atol=3e-3,
    )


def test_bayes_curve_limits():
    k = 0.5
    a_pr = perfect_recovery_threshold(k)
    assert a_pr == pytest.approx(0.375)
    assert perfect_recovery_threshold(3.0) == 0.5
    assert bayes_optimal_mse(1e-4, k)[()] == pytest.approx(1.0, abs=1e-2)
    assert bayes_optimal_mse(a_pr - 1e-3, k)[()] < 0.02
    assert bayes_optimal_mse(a_pr + 1e-3, k)[()] == 0.0
    assert bayes_optimal_mse(a_pr + 0.1, k, delta=0.1)[()] > 0.0  # noise: no perfect recovery
    # units: MSE_std = MSE°/κ with Δ_std = Δ°/κ
    assert bayes_optimal_mse(0.2, k, 0.1, units="standard")[()] == pytest.approx(
        bayes_optimal_mse(0.2, k, 0.1 * k)[()] / k, rel=1e-9
    )


def test_small_width_limit():
    """κ → 0 at fixed a = α/κ: MMSE → 1 (a ≤ ½), 4a(1 − a) (½ ≤ a ≤ 1), 0 (a ≥ 1)."""
    a = np.array([0.3, 0.7, 0.85, 1.2])
    expected = np.array([1.0, 4 * 0.7 * 0.3, 4 * 0.85 * 0.15, 0.0])
    err_small = np.abs(bayes_optimal_mse(a * 1e-3, 1e-3) - expected)
    err_large = np.abs(bayes_optimal_mse(a * 1e-2, 1e-2) - expected)
    assert np.all(err_small < 0.01)
    assert np.all(err_small <= err_large + 1e-12)  # converging as κ → 0


def test_state_evolution_fixed_point():
    """Spec §7.8: the fixed point equals state evolution's limit from the prior mean."""
    for alpha, delta in [(0.2, 0.0), (0.1, 0.25), (0.3, 0.25)]:
        traj = state_evolution(alpha, 0.5, delta, n_iter=300)
        assert traj[0] == 1.0
        assert np.all(np.diff(traj) <= 1e-12)  # monotone from the prior mean
        assert traj[-1] == pytest.approx(bayes_optimal_mse(alpha, 0.5, delta)[()], abs=1e-4)
    assert state_evolution(0.45, 0.5, n_iter=200)[-1] < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"kappa": 0.0}, "kappa"), ({"alpha": -0.1}, "alpha"), ({"delta": -1.0}, "delta")],
)
def test_theory_bad_inputs(kwargs, name):
    args = {"alpha": 0.2, "kappa": 0.5, "delta": 0.0} | kwargs
    with pytest.raises(ValueError, match=name):
        bayes_optimal_mse(**args)
    with pytest.raises(ValueError, match=name):
        state_evolution(**args)


# ---- teacher, operators ------------------------------------------------------------------------


def test_teacher_shapes_and_label_variance():
    """Spec §7.6: Var(y) ≈ 2‖S°‖²_F/d + Δ ≈ 2(1 + κ) + Δ."""
    gen = torch.Generator().manual_seed(0)
    data = sample_quadratic_teacher(60, 0.5, 2.0, 0.3, generator=gen)
    assert data.X.shape == (7200, 60) and data.W.shape == (30, 60) and data.S.shape == (60, 60)
    expected = 2 * float((data.S**2).sum()) / 60 + 0.3
    assert float(data.y.var()) == pytest.approx(expected, rel=0.05)
    assert expected == pytest.approx(2 * 1.5 + 0.3, rel=0.1)
    # labels are the network's outputs, centred
    net_out = (data.X @ data.W.T / math.sqrt(60)).pow(2).sum(1) / math.sqrt(30)
    resid = data.uncentered_labels() - net_out
    assert float(resid.std()) == pytest.approx(math.sqrt(0.3), rel=0.05)


def test_teacher_bad_inputs():
    with pytest.raises(ValueError, match="kappa"):
        sample_quadratic_teacher(10, 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        sample_quadratic_teacher(10, 0.5, 0.0)
    with pytest.raises(ValueError, match="delta"):
        sample_quadratic_teacher(10, 0.5, 0.5, -0.1)
    with pytest.raises(ValueError, match="too small"):
        sample_quadratic_teacher(4, 0.1, 0.5)
    with pytest.raises(ValueError, match="d"):
        sample_quadratic_teacher(0, 0.5, 0.5)


def test_teacher_is_deterministic_under_a_seed():
    a = sample_quadratic_teacher(10, 0.5, 0.5, generator=torch.Generator().manual_seed(5))
    b = sample_quadratic_teacher(10, 0.5, 0.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)


def test_operators_adjoint_and_reference():
    """Spec §7.5: ⟨𝒜(S), g⟩ = ⟨S, 𝒜*(g)⟩, and both match the explicit n×d×d tensor."""
    gen = torch.Generator().manual_seed(0)
    n, d = 25, 7
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    s = torch.randn(d, d, generator=gen, dtype=torch.float64)
    s = s + s.T
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    z = (torch.einsum("ni,nj->nij", x, x) - torch.eye(d, dtype=x.dtype)) / math.sqrt(d)
    torch.testing.assert_close(sensing_forward(x, s), torch.einsum("nij,ij->n", z, s))
    torch.testing.assert_close(sensing_adjoint(x, g), torch.einsum("n,nij->ij", g, z))
    lhs = float(sensing_forward(x, s) @ g)
    rhs = float((s * sensing_adjoint(x, g)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


# ---- GAMP-RIE ----------------------------------------------------------------------------------


def test_gamp_rie_perfect_recovery_noiseless():
    data = sample_quadratic_teacher(40, 0.5, 0.45, generator=torch.Generator().manual_seed(0))
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S, tol=1e-8)
    assert data.mse(res.S_hat) < 1e-2
    assert res.history["mse"][-1] == pytest.approx(data.mse(res.S_hat))
    assert res.history["mse"][-1] < 0.05 * res.history["mse"][0]


def test_gamp_rie_tracks_bayes_curve():
    """One draw at d = 50, α = 0.25 (calibrated: |dev| ≤ 0.05 on seeds 0–3)."""
    alpha = 0.25
    data = sample_quadratic_teacher(50, 0.5, alpha, generator=torch.Generator().manual_seed(1))
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S, tol=1e-6)
    assert data.mse(res.S_hat) == pytest.approx(bayes_optimal_mse(alpha, 0.5)[()], abs=0.08)
    # the algorithm's own error estimate Ĉ/2 agrees with the realised error
    assert res.history["c_hat"][-1] / 2 == pytest.approx(data.mse(res.S_hat), abs=0.08)


def test_gamp_rie_prior_sample_init_and_determinism():
    data = sample_quadratic_teacher(20, 0.5, 0.3, generator=torch.Generator().manual_seed(0))
    kw = {"init": "prior_sample", "max_iter": 5}
    a = gamp_rie(data.X, data.y, 0.5, generator=torch.Generator().manual_seed(3), **kw)
    b = gamp_rie(data.X, data.y, 0.5, generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(a.S_hat, b.S_hat, rtol=0, atol=0)
    assert a.n_iter == 5 and not a.converged


def test_gamp_rie_bad_inputs():
    x = torch.randn(30, 10, dtype=torch.float64)
    y = torch.randn(30, dtype=torch.float64)
    with pytest.raises(ValueError, match="X"):
        gamp_rie(x[0], y, 0.5)
    with pytest.raises(ValueError, match="y"):
        gamp_rie(x, y[:5], 0.5)
    with pytest.raises(ValueError, match="kappa"):
        gamp_rie(x, y, -0.5)
    with pytest.raises(ValueError, match="too small"):
        gamp_rie(x, y, 0.01)
    with pytest.raises(ValueError, match="delta"):
        gamp_rie(x, y, 0.5, -0.1)
    with pytest.raises(ValueError, match="damping"):
        gamp_rie(x, y, 0.5, damping=1.0)
    with pytest.raises(ValueError, match="init"):
        gamp_rie(x, y, 0.5, init="zeros")
    with pytest.raises(ValueError, match="y"):
        gamp_rie(x, torch.full((30,), float("nan"), dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="real"):
        gamp_rie(x.to(torch.complex128), y, 0.5)


# ---- GD baselines ------------------------------------------------------------------------------


def test_quadratic_net_matches_teacher():
    data = sample_quadratic_teacher(12, 0.5, 1.0, generator=torch.Generator().manual_seed(0))
    net = QuadraticNet(12, 6, 1)
    with torch.no_grad():
        net.weight.copy_(data.W[None])
    torch.testing.assert_close(net(data.X)[0], data.uncentered_labels())
    net.centered = True
    torch.testing.assert_close(net(data.X)[0], data.y)
    torch.testing.assert_close(net.gram("paper")[0], data.S)
    torch.testing.assert_close(net.gram("standard")[0] * math.sqrt(0.5), data.S)


def test_gd_ensemble_decreases_loss_and_averaging_helps():
    data = sample_quadratic_teacher(16, 0.5, 0.35, generator=torch.Generator().manual_seed(0))
    grams, losses = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=300,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
        return_losses=True,
    )
    assert grams.shape == (6, 16, 16)
    assert torch.all(losses[-1] < 1e-2 * losses[0])
    assert torch.all(losses[10] < losses[0])
    single = float(((grams - data.S) ** 2).sum((-1, -2)).mean() / 16)
    assert data.mse(grams.mean(0)) < single
    # reduction="mean" with lr·n follows the same trajectory
    g2 = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=20,
        lr=0.05 * data.X.shape[0],
        reduction="mean",
        generator=torch.Generator().manual_seed(1),
    )
    g1 = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=20,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(g1, g2)


def test_gd_ensemble_reports_divergence():
    data = sample_quadratic_teacher(16, 0.5, 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="diverged"):
        train_gd_ensemble(data.X, data.uncentered_labels(), 8, 2, steps=200, lr=5.0)
    with pytest.raises(ValueError, match="optimizer"):
        train_gd_ensemble(data.X, data.uncentered_labels(), 8, 2, steps=2, optimizer="lbfgs")
