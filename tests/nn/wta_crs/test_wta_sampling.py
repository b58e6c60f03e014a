"""WTA-CRS sampler (spec wta_crs.md §7.1-2): winners, weights, unbiasedness, the fused path."""

import math

import pytest
import torch

from optforge.nn.wta_crs import approx_matmul, aten_op_counts, n_winners, sample_indices


def _lognormal(n, d, g):
    scale = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale[:, None]


def test_winners_first_are_the_top_scores_with_weight_one():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200, generator=g) ** 6
    seen_winners = False
    for k in (2, 5, 40, 199):
        idx, w = sample_indices(p, k, generator=g)
        assert idx.shape == (k,) and w.shape == (k,)
        assert idx.dtype == torch.int64 and w.dtype == torch.float32
        assert (w > 0).all() and (idx >= 0).all() and (idx < 200).all()
        c = n_winners(p, k)
        seen_winners |= c > 0
        top = torch.topk(p, k)
        assert idx[:c].tolist() == top.indices[:c].tolist()
        assert (w[:c] == 1.0).all() and (w[c:] >= 1.0).all()
        if c > 0:  # the paper's condition P_C > |C| / k
            assert float(top.values[:c].sum() / p.sum()) > c / k
        # draws come from the residual: a winner is never drawn again
        assert not set(idx[c:].tolist()) & set(idx[:c].tolist())
    assert seen_winners


def test_adaptive_rule_matches_the_official_scores():
    """|C| = argmin_{c<k} (1 − P_c)/(k − c), used only if below 1/k (official k_adaptive_3D)."""
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        p = torch.rand(300, generator=g, dtype=torch.float64) ** (1 + trial)
        k = 30
        q = torch.sort(p / p.sum(), descending=True).values[:k]
        score = (1 - torch.cumsum(q, 0)[: k - 1]) / (k - torch.arange(1, k, dtype=torch.float64))
        expect = int(torch.argmin(score)) + 1 if float(score.min()) < 1 / k else 0
        assert n_winners(p, k) == expect


def test_adaptive_rule_special_cases_and_fixed_winners():
    g = torch.Generator().manual_seed(1)
    uniform = torch.ones(100)
    idx, w = sample_indices(uniform, 10, generator=g)
    assert n_winners(uniform, 10) == 0
    assert torch.allclose(w, torch.full((10,), 10.0))  # 1 / (k · 1/N)
    peaked = torch.full((100,), 0.1 / 99)
    peaked[17] = 0.9
    idx, w = sample_indices(peaked, 2, generator=g)
    assert idx[0] == 17 and w[0] == 1.0
    idx, w = sample_indices(peaked, 10, adaptive=False, generator=g)  # CRS: every slot drawn
    assert (w != 1.0).all()
    idx, w = sample_indices(torch.rand(100, generator=g), 10, det_ratio=0.55, generator=g)
    assert (w[:5] == 1.0).all() and (w[5:] != 1.0).all()
    assert sample_indices(torch.rand(5), 9)[0].tolist() == [0, 1, 2, 3, 4]


def test_zero_residual_is_exact_and_zero_scores_are_finite():
    x = torch.zeros(6, 10, dtype=torch.float64)
    x[:, 3] = torch.arange(6.0)
    x[:, 7] = 1.0
    y = torch.randn(10, 4, dtype=torch.float64)
    for seed in range(5):
        est = approx_matmul(x, y, 4, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(est, x @ y, rtol=1e-12, atol=1e-12)
    for method in (True, False):
        idx, w = sample_indices(torch.zeros(20), 5, adaptive=method)
        assert torch.isfinite(w).all() and (idx < 20).all()


def test_draws_stay_below_the_residual_mass():
    """fl(u·R) < R for the largest fp32 uniform u = 1 − 2⁻²⁴: a draw never reaches a winner."""
    g = torch.Generator().manual_seed(2)
    # R sums at least two residual scores (|C| ≤ k − 1 ≤ N − 2), each clamped at the smallest
    # normal float: R ≥ 2·tiny and finite
    logs = torch.empty(200_000).uniform_(-86.0, 88.0, generator=g)
    residual = torch.cat([torch.exp(logs), 2.0 ** torch.arange(-125, 128).float()])
    residual = residual[
        torch.isfinite(residual) & (residual >= 2 * torch.finfo(torch.float32).tiny)
    ]
    u = torch.tensor(1 - 2.0**-24)
    assert u < 1
    assert (u * residual < residual).all()


@pytest.mark.parametrize("method", ["wta", "crs"])
def test_approx_matmul_unbiased_monte_carlo(method):
    g = torch.Generator().manual_seed(3)
    scale = torch.exp(torch.randn(32, generator=g, dtype=torch.float64))
    x = torch.randn(64, 32, generator=g, dtype=torch.float64) * scale
    y = torch.randn(32, 16, generator=g, dtype=torch.float64)
    draws = 4000
    ests = torch.stack([approx_matmul(x, y, 8, method=method, generator=g) for _ in range(draws)])
    exact = x @ y
    se = ests.std(0) / math.sqrt(draws)
    z = (ests.mean(0) - exact) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.5  # 1024 entries: P(max |z| > 4.5) < 1 % if unbiased
    # norm-level check: unbiased, mean − exact ~ N(0, Σ/draws), so ‖mean − exact‖² · draws is
    # Σ_i λ_i χ²_1 over the eigenvalues of Σ; a bias b adds draws·‖b‖². Compare with the 99.9 %
    # quantile of that null distribution (simulated from the empirical spectrum).
    centred = (ests - ests.mean(0)).flatten(1)
    lam = torch.linalg.eigvalsh(centred.T @ centred / (draws - 1)).clamp_min(0)
    null = (torch.randn(4000, lam.numel(), generator=g, dtype=torch.float64) ** 2) @ lam
    stat = (ests.mean(0) - exact).pow(2).sum() * draws
    assert stat < torch.quantile(null, 0.999)


def test_fp32_sampler_unbiased_with_many_rows():
    """With N = 4096 fp32 scores, the empirical draw frequencies match q_j (no rounding bias)."""
    g = torch.Generator().manual_seed(4)
    p = torch.exp(torch.randn(4096, generator=g) * 1.5)
    k, draws = 400, 300
    c = n_winners(p, k)
    counts = torch.zeros(4096, dtype=torch.float64)
    weighted = torch.zeros(4096, dtype=torch.float64)
    for _ in range(draws):
        idx, w = sample_indices(p, k, generator=g)
        counts.index_add_(0, idx[c:], torch.ones(k - c, dtype=torch.float64))
        weighted.index_add_(0, idx, w.double())
    # E[Σ_t w_t 1{idx_t = j}] = 1 for every row j: the sum over rows of the mean is N
    total = weighted.sum() / draws
    assert abs(float(total) / 4096 - 1) < 0.01
    winners = torch.topk(p, c).indices
    assert torch.allclose(weighted[winners] / draws, torch.ones(c, dtype=torch.float64))


def test_one_fused_pass_without_top_k_or_multinomial():
    p = torch.rand(4096)
    ops = aten_op_counts(lambda: sample_indices(p, 300))
    for name in ("aten::sort", "aten::cumsum", "aten::rand", "aten::searchsorted"):
        assert ops[name] == 1, (name, ops)
    for name in ("aten::topk", "aten::multinomial", "aten::item", "aten::argmin", "aten::scatter"):
        assert ops[name] == 0, (name, ops)


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="k"):
        sample_indices(torch.rand(5), 0)
    with pytest.raises(ValueError, match="1-D"):
        sample_indices(torch.rand(5, 2), 2)
    with pytest.raises(TypeError, match="floating"):
        sample_indices(torch.ones(5, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="det_ratio"):
        sample_indices(torch.rand(5), 2, det_ratio=1.0)
    with pytest.raises(ValueError, match="method"):
        approx_matmul(torch.ones(2, 3), torch.ones(3, 2), 1, method="bad")
    with pytest.raises(ValueError, match="matrices"):
        approx_matmul(torch.ones(2, 3), torch.ones(2, 2), 1)
