"""GAMP-RIE (``gamp_rie.algorithm``)."""

import warnings

import pytest
import torch

from optforge.matrix.gamp_rie import GampRieDivergenceWarning, bayes_optimal_mse, gamp_rie
from optforge.matrix.quadratic_nets import sample_quadratic_teacher


def test_gamp_rie_perfect_recovery_noiseless():
    data = sample_quadratic_teacher(40, 0.5, 0.45, generator=torch.Generator().manual_seed(0))
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S, tol=1e-8, max_iter=100)
    assert data.mse(res.S_hat) < 1e-2
    assert res.history["mse"][-1] == pytest.approx(data.mse(res.S_hat))
    assert res.history["mse"][-1] < 0.05 * res.history["mse"][0]


def test_gamp_rie_tracks_bayes_curve():
    """One draw at d = 50, α = 0.25 (calibrated: |dev| ≤ 0.05 on seeds 0–3)."""
    alpha = 0.25
    data = sample_quadratic_teacher(50, 0.5, alpha, generator=torch.Generator().manual_seed(1))
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S, tol=1e-6)
    assert data.mse(res.S_hat) == pytest.approx(bayes_optimal_mse(alpha, 0.5)[()], abs=0.08)
    assert res.converged and res.restarts == 0  # the guard does not fire in range
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


def _small_alpha_data():
    """d = 60, α = 0.05 (n = 180): the undamped run diverges (mse 1.65 after 100 iterations)."""
    return sample_quadratic_teacher(60, 0.5, 0.05, generator=torch.Generator().manual_seed(1))


def _unguarded(data):
    """The former algorithm: no guard, no plateau rule, 100 iterations, tol 1e-6."""
    return gamp_rie(
        data.X, data.y, 0.5, S_true=data.S, guard=False, plateau_rtol=0.0, max_iter=100, tol=1e-6
    )


def test_gamp_rie_reports_why_it_stopped_in_range():
    """d = 60, α = 0.2: the step never falls below 1e-5 at finite d (the former run stopped at
    the 100-iteration cap, converged=False); the plateau rule stops it once the error estimate
    no longer improves, at the same error."""
    data = sample_quadratic_teacher(60, 0.5, 0.2, generator=torch.Generator().manual_seed(2))
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S)
    old = _unguarded(data)
    assert old.n_iter == 100 and not old.converged and old.stop_reason == "max_iter"
    assert res.converged and res.stop_reason in ("tol", "plateau") and res.n_iter < 100
    assert res.restarts == 0 and res.attempts == [
        {"damping": 0.5, "n_iter": res.n_iter, "stop_reason": res.stop_reason}
    ]
    theory = bayes_optimal_mse(0.2, 0.5)[()]
    assert abs(data.mse(res.S_hat) - theory) <= abs(data.mse(old.S_hat) - theory) + 0.02
    assert res.error_estimate == pytest.approx(res.history["c_hat"][-1] / 2)
    short = gamp_rie(data.X, data.y, 0.5, max_iter=5)
    assert short.stop_reason == "max_iter" and not short.converged


def test_gamp_rie_divergence_guard_restarts_with_more_damping():
    data = _small_alpha_data()
    old = _unguarded(data)
    res = gamp_rie(data.X, data.y, 0.5, S_true=data.S)
    assert data.mse(old.S_hat) > 1.3  # worse than the prior mean (error 1)
    assert res.attempts[0]["stop_reason"] == "diverged" and res.restarts >= 1
    assert res.damping == pytest.approx(1 - 0.5 ** (res.restarts + 1))
    assert res.stop_reason != "diverged"
    assert data.mse(res.S_hat) < 1.0 < data.mse(old.S_hat)


def test_gamp_rie_divergence_fallback_warns_and_returns_best_iterate():
    """Without restarts the guard stops with a warning; no iterate after the burn-in passes the
    Nishimori check here, so the best iterate is the prior mean (estimated error 1)."""
    data = _small_alpha_data()
    with pytest.warns(GampRieDivergenceWarning, match="diverged"):
        res = gamp_rie(data.X, data.y, 0.5, S_true=data.S, max_restarts=0)
    assert res.stop_reason == "diverged" and not res.converged and res.restarts == 0
    assert res.error_estimate == 1.0
    torch.testing.assert_close(res.S_hat, 0.5**0.5 * torch.eye(60, dtype=torch.float64))
    assert res.history["mse"][-1] > 1.5  # the diverging iterate it did not return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gamp_rie(data.X, data.y, 0.5, guard=False, max_iter=20)  # no guard, no warning


def test_gamp_rie_new_options_are_validated():
    x = torch.randn(30, 10, dtype=torch.float64)
    y = torch.randn(30, dtype=torch.float64)
    with pytest.raises(ValueError, match="patience"):
        gamp_rie(x, y, 0.5, patience=0)
    with pytest.raises(ValueError, match="plateau_rtol"):
        gamp_rie(x, y, 0.5, plateau_rtol=1.0)
    with pytest.raises(ValueError, match="max_restarts"):
        gamp_rie(x, y, 0.5, max_restarts=-1)
