"""The rotation-invariant estimator (``gamp_rie.rie``)."""

import math

import pytest
import torch
from _gamp_rie_helpers import _goe

from optforge.matrix.gamp_rie import RIEDenoiser, denoising_mmse
from optforge.matrix.quadratic_nets import sample_quadratic_teacher


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
