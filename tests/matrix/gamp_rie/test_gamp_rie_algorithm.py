"""GAMP-RIE (``gamp_rie.algorithm``)."""

import pytest
import torch

from optforge.matrix.gamp_rie import bayes_optimal_mse, gamp_rie
from optforge.matrix.quadratic_nets import sample_quadratic_teacher


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
