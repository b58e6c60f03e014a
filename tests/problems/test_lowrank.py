"""The incoherent low-rank matrix completion problem (``optforge.problems.lowrank``)."""

import math

import pytest
import torch

from optforge.problems import make_incoherent_lowrank


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_factors_values_and_bernoulli_mask():
    m, n, k, p = 70, 50, 3, 0.4
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(m, n, k, cond=3.0, p=p, generator=_gen(0))
    assert us.shape == (m, k) and vs.shape == (n, k) and s.shape == (k,)
    eye = torch.eye(k, dtype=torch.float64)
    torch.testing.assert_close(us.T @ us, eye)
    torch.testing.assert_close(vs.T @ vs, eye)
    torch.testing.assert_close(
        s, torch.linspace(1.0, 3.0, k, dtype=torch.float64) * math.sqrt(m * n / k)
    )
    dense = us * s @ vs.T
    torch.testing.assert_close(vals, dense[rows, cols])
    assert torch.unique(rows * n + cols).numel() == rows.numel()  # no duplicates
    # |Ω| ~ Binomial(mn, p): within 5 standard deviations
    assert abs(rows.numel() - p * m * n) < 5 * math.sqrt(m * n * p * (1 - p))


def test_n_obs_noise_and_determinism():
    a = make_incoherent_lowrank(30, 20, 2, n_obs=250, noise=0.1, generator=_gen(1))
    b = make_incoherent_lowrank(30, 20, 2, n_obs=250, noise=0.1, generator=_gen(1))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    us, s, vs, rows, cols, vals = a
    assert rows.numel() == 250 and torch.unique(rows * 20 + cols).numel() == 250
    resid = vals - (us * s @ vs.T)[rows, cols]
    assert 0.05 < float(resid.std()) < 0.2


def test_old_import_paths_are_deprecated_aliases_of_the_same_function():
    import optforge.matrix
    import optforge.matrix.altmin

    with pytest.warns(DeprecationWarning, match="optforge.problems"):
        from optforge.matrix import make_incoherent_lowrank as from_matrix
    with pytest.warns(DeprecationWarning, match="optforge.problems"):
        from optforge.matrix.altmin import make_incoherent_lowrank as from_altmin

    assert from_matrix is from_altmin is make_incoherent_lowrank
    assert "make_incoherent_lowrank" not in optforge.matrix.__all__
    assert "make_incoherent_lowrank" not in optforge.matrix.altmin.__all__
    with pytest.raises(AttributeError):
        optforge.matrix.altmin.no_such_name  # noqa: B018


def test_bad_inputs():
    with pytest.raises(ValueError, match="exactly one"):
        make_incoherent_lowrank(10, 10, 2)
    with pytest.raises(ValueError, match="exactly one"):
        make_incoherent_lowrank(10, 10, 2, p=0.5, n_obs=10)
    with pytest.raises(ValueError, match="p must"):
        make_incoherent_lowrank(10, 10, 2, p=1.5)
    with pytest.raises(ValueError, match="n_obs"):
        make_incoherent_lowrank(10, 10, 2, n_obs=101)
    with pytest.raises(ValueError, match="k"):
        make_incoherent_lowrank(10, 10, 0, p=0.5)
    with pytest.raises(ValueError, match="noise"):
        make_incoherent_lowrank(10, 10, 2, p=0.5, noise=-1.0)
