"""Tests of the Sven direction: the truncated pseudoinverse and its solvers (gram, full,
randomized, lowrank)."""

import pytest
import torch

from optforge.optim.sven import sven_direction, truncated_pinv_factors

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _with_singular_values(values, rows, cols, seed=0):
    """A (rows × cols) float64 matrix with the given singular values."""
    g = _gen(seed)
    U = torch.linalg.qr(torch.randn(rows, len(values), generator=g, dtype=F64)).Q
    V = torch.linalg.qr(torch.randn(cols, len(values), generator=g, dtype=F64)).Q
    return U @ torch.diag(torch.tensor(values, dtype=F64)) @ V.T


@pytest.mark.parametrize("shape", [(8, 20), (20, 8)])
@pytest.mark.parametrize("method", ["gram", "full", "randomized", "lowrank"])
def test_direction_equals_pinv(shape, method):
    g = _gen(3)
    M = torch.randn(*shape, generator=g, dtype=F64)
    R = torch.randn(shape[0], generator=g, dtype=F64)
    d, info = sven_direction(
        M, R, k=None, rtol=1e-12, method=method, power_iters=2, generator=_gen(0)
    )
    assert info.rank == min(shape)
    torch.testing.assert_close(d, torch.linalg.pinv(M) @ R, atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["randomized", "lowrank"])
def test_randomized_truncation_matches_exact_truncation_with_a_gap(method):
    # 4 large singular values, then a gap of 1e4: the rank-4 truncations must agree.
    sv = [10.0, 8.0, 5.0, 3.0] + [1e-4] * 10
    M = _with_singular_values(sv, 30, 200)
    R = torch.randn(30, generator=_gen(5), dtype=F64)
    exact, _ = sven_direction(M, R, k=4, rtol=1e-9, method="full")
    approx, info = sven_direction(
        M, R, k=4, rtol=1e-9, method=method, power_iters=2, generator=_gen(1)
    )
    assert info.rank == 4
    torch.testing.assert_close(approx, exact, atol=1e-8, rtol=1e-8)


def test_solvers_agree_under_truncation():
    M = torch.randn(16, 40, generator=_gen(4), dtype=F64)
    R = torch.randn(16, generator=_gen(6), dtype=F64)
    ref, _ = sven_direction(M, R, k=6, method="full")
    gram, _ = sven_direction(M, R, k=6, method="gram")
    gram_tall, _ = sven_direction(M.T.contiguous(), torch.randn(40, dtype=F64), k=6)
    torch.testing.assert_close(gram, ref, atol=1e-10, rtol=0)
    assert gram_tall.shape == (16,)


def test_gauss_newton_identity_when_underparametrised():
    M = torch.randn(30, 7, generator=_gen(8), dtype=F64)
    R = torch.randn(30, generator=_gen(9), dtype=F64)
    d, _ = sven_direction(M, R, rtol=1e-12)
    torch.testing.assert_close(d, torch.linalg.solve(M.T @ M, M.T @ R), atol=1e-8, rtol=0)


def test_single_example_is_newton_raphson():
    g = torch.randn(1, 50, generator=_gen(10), dtype=F64)
    R = torch.tensor([0.7], dtype=F64)
    d, info = sven_direction(g, R)
    assert info.rank == 1
    torch.testing.assert_close(d, R * g[0] / g.norm() ** 2, atol=1e-12, rtol=0)


def test_truncation_by_rtol_k_and_tol():
    M = _with_singular_values([10.0, 1.0, 0.1, 1e-5], 6, 9)
    R = torch.randn(6, generator=_gen(11), dtype=F64)
    for method in ("gram", "full"):
        _, info = sven_direction(M, R, rtol=1e-3, method=method)
        assert info.rank == 3
        assert info.sigma_max == pytest.approx(10.0)
        assert info.sigma_min_kept == pytest.approx(0.1)
        assert sven_direction(M, R, k=2, rtol=1e-3, method=method)[1].rank == 2
        assert sven_direction(M, R, rtol=1e-9, tol=0.5, method=method)[1].rank == 2
        assert sven_direction(M, R, rtol=1e-9, method=method)[1].rank == 4
    # the truncated direction is exactly the rank-2 pseudoinverse
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    expected = Vh[:2].T @ ((U[:, :2].T @ R) / S[:2])
    torch.testing.assert_close(sven_direction(M, R, k=2)[0], expected, atol=1e-12, rtol=0)
    U_r, s_r, V_r, sigma = truncated_pinv_factors(M, k=2, method="full")
    assert U_r.shape == (6, 2) and V_r.shape == (9, 2) and s_r.shape == (2,) and len(sigma) == 6


def test_orthogonal_reparametrisation_is_covariant():
    M = torch.randn(10, 25, generator=_gen(12), dtype=F64)
    R = torch.randn(10, generator=_gen(13), dtype=F64)
    Q = torch.linalg.qr(torch.randn(25, 25, generator=_gen(14), dtype=F64)).Q
    d_theta, _ = sven_direction(M, R, k=6)
    d_phi, _ = sven_direction(M @ Q, R, k=6)
    torch.testing.assert_close(Q @ d_phi, d_theta, atol=1e-10, rtol=0)
