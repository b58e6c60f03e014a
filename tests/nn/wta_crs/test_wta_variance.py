"""Closed-form variance of CRS / WTA-CRS (spec §7.3-4), checked against Monte-Carlo draws."""

import math

import pytest
import torch

from optforge.nn.wta_crs import approx_matmul, expected_squared_error, n_winners


def _lognormal_pair(n=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s1 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    s2 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * s1[:, None]
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * s2[:, None]
    return x, y


@pytest.mark.parametrize("method", ["wta", "crs", "uniform"])
def test_closed_form_matches_monte_carlo(method):
    x, y = _lognormal_pair(n=128, d=16, seed=2)
    a_mat, b_mat = y.T, x  # estimate yᵀ x, contraction over the 128 rows
    exact = a_mat @ b_mat
    k = 16
    closed = float(expected_squared_error(a_mat, b_mat, k, method=method))
    g = torch.Generator().manual_seed(0)
    draws = 4000
    err = torch.stack(
        [
            (approx_matmul(a_mat, b_mat, k, method=method, generator=g) - exact).pow(2).sum()
            for _ in range(draws)
        ]
    )
    se = float(err.std()) / math.sqrt(draws)
    assert abs(float(err.mean()) - closed) < 4 * se
    assert abs(float(err.mean()) / closed - 1) < 0.1


def test_crs_closed_form_is_the_textbook_formula():
    x, y = _lognormal_pair(n=128, d=16, seed=3)
    a_mat, b_mat = y.T, x
    a = a_mat.norm(dim=0) * b_mat.norm(dim=1)
    k = 16
    textbook = (a.sum() ** 2 - (a_mat @ b_mat).pow(2).sum()) / k  # p ∝ a
    torch.testing.assert_close(
        expected_squared_error(a_mat, b_mat, k, method="crs"), textbook, rtol=1e-9, atol=0
    )


def test_closed_form_with_given_probabilities_and_winners():
    x, y = _lognormal_pair(n=64, d=8, seed=4)
    a_mat, b_mat = y.T, x
    probs = torch.exp(3 * torch.randn(64, generator=torch.Generator().manual_seed(1)))
    k = 12
    assert n_winners(probs, k) > 0
    closed = float(expected_squared_error(a_mat, b_mat, k, probs=probs))
    g = torch.Generator().manual_seed(5)
    exact = a_mat @ b_mat
    draws = 4000
    err = torch.stack(
        [
            (approx_matmul(a_mat, b_mat, k, probs=probs, generator=g) - exact).pow(2).sum()
            for _ in range(draws)
        ]
    )
    assert abs(float(err.mean()) - closed) < 4 * float(err.std()) / math.sqrt(draws)


def test_exact_when_k_covers_everything():
    x, y = _lognormal_pair(n=32, d=4)
    assert float(expected_squared_error(y.T, x, 32)) == 0.0


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_wta_below_crs_on_heavy_tailed_rows(ratio):
    """The paper's claim (variance WTA < CRS when mass is concentrated), in closed form."""
    for seed in range(3):
        x, y = _lognormal_pair(seed=seed)
        k = round(ratio * 512)
        wta = expected_squared_error(y.T, x, k, method="wta")
        crs = expected_squared_error(y.T, x, k, method="crs")
        uniform = expected_squared_error(y.T, x, k, method="uniform")
        assert wta < crs < uniform
