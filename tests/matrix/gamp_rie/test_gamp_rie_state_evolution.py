"""Bayes-optimal error and state evolution (``gamp_rie.state_evolution``)."""

import importlib

import numpy as np
import pytest

from optforge.matrix.gamp_rie import (
    bayes_optimal_mse,
    denoising_mmse,
    perfect_recovery_threshold,
    state_evolution,
)

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


@pytest.mark.parametrize("kappa", [0.2, 1.0, 2.0])
def test_fixed_point_above_threshold_is_computed_and_matches_shortcut(kappa):
    """Above α_PR the fixed-point search itself finds no root in [1e-12, 1]: 0, as the
    documented shortcut says; just below α_PR it finds a positive root."""
    a_pr = perfect_recovery_threshold(kappa)
    above = np.array([1.001, 1.2]) * a_pr
    computed = bayes_optimal_mse(above, kappa)
    np.testing.assert_array_equal(computed, bayes_optimal_mse(above, kappa, shortcut=True))
    assert np.all(computed == 0.0)
    assert 0.0 < bayes_optimal_mse(0.99 * a_pr, kappa)[()] < 0.05


def test_default_fixed_point_does_not_take_the_shortcut(monkeypatch):
    """The default path solves the fixed point: it gives 0 above α_PR even when the closed-form
    threshold is made unusable (the former code returned 0 through that branch only)."""
    se = importlib.import_module("optforge.matrix.gamp_rie.state_evolution")  # module, not fn

    def broken(kappa):
        raise AssertionError("the shortcut was consulted")

    monkeypatch.setattr(se, "perfect_recovery_threshold", broken)
    assert bayes_optimal_mse(0.45, 0.5)[()] == 0.0
    with pytest.raises(AssertionError, match="shortcut"):
        bayes_optimal_mse(0.45, 0.5, shortcut=True)


@pytest.mark.parametrize("kappa", [0.5, 2.0])
def test_mmse_below_its_tangent_at_zero(kappa):
    """mmse°(Δ) ≤ 2α_PR·Δ, the bound that makes 0 the only fixed point above α_PR."""
    slope = 2 * perfect_recovery_threshold(kappa)
    for delta in np.geomspace(1e-9, 10.0, 25):
        assert denoising_mmse(delta, kappa) <= slope * delta * (1 + 1e-9)
    assert denoising_mmse(1e-6, kappa) == pytest.approx(slope * 1e-6, rel=1e-2)


def test_repro_bayes_curve_takes_the_shortcut(monkeypatch):
    """Issue #34: the gamp-rie reproduction's Bayes curves use ``shortcut=True`` (0 in closed
    form for noiseless α ≥ α_PR, the value the search returns there, checked above) instead of
    scanning 49 points per α."""
    from optforge.repro.papers import gamp_rie as repro

    flags = []

    def spy(*args, **kwargs):
        flags.append(kwargs.get("shortcut", False))
        return bayes_optimal_mse(*args, **kwargs)

    monkeypatch.setattr(repro, "bayes_optimal_mse", spy)
    config = {**repro.CONFIGS["quick"], "alphas": (0.3, 0.45)}
    out = repro._ARM_RUNS["bayes-optimal"](config, 100, "cpu")
    alphas, curve = np.array(out["alpha"]), np.array(out["mse"])
    assert flags == [True]
    assert (curve[alphas >= perfect_recovery_threshold(0.5)] == 0.0).all()
    assert (curve[alphas < perfect_recovery_threshold(0.5)] > 0.0).all()
