"""The five batch-size tests: closed forms, calibration, the coordinate-wise quantile."""

from __future__ import annotations

import pytest
import torch
from _adadagrad_helpers import HAND_G, _np_reference

from optforge.optim import (
    AdaptiveBatchSize,
    GradStats,
)
from optforge.optim.adadagrad import (
    augmented_inner_product_test,
    coordinate_norm_test,
    inner_product_test,
    norm_test,
    orthogonality_test,
)


def test_closed_form_statistics_on_a_hand_made_batch() -> None:
    G = torch.from_numpy(HAND_G)
    stats = GradStats.from_samples(G, ref=G.mean(0))
    ref = _np_reference(HAND_G, 0.5, 0.4, 0.6)
    # by hand: column sums of squared deviations 1.25, 4.6875, 3.25, divided by b - 1 = 3
    assert stats.trace_variance == pytest.approx((1.25 + 4.6875 + 3.25) / 3, rel=1e-12)
    assert stats.trace_variance == pytest.approx(ref["S"], rel=1e-12)
    assert stats.ip_variance == pytest.approx(ref["var_a"], rel=1e-12)
    assert norm_test(stats, 0.5) == pytest.approx(ref["norm"], rel=1e-12)
    assert inner_product_test(stats, 0.4) == pytest.approx(ref["ip"], rel=1e-12)
    assert orthogonality_test(stats, 0.6) == pytest.approx(ref["orth"], rel=1e-12)
    assert augmented_inner_product_test(stats, 0.4, 0.6) == pytest.approx(
        max(ref["ip"], ref["orth"]), rel=1e-12
    )
    assert coordinate_norm_test(stats, 0.5) == pytest.approx(ref["coord"], rel=1e-12)
    torch.testing.assert_close(stats.sumsq, G.pow(2).sum(0))


def test_norm_test_concentrates_on_the_ideal_batch_size() -> None:
    gen = torch.Generator().manual_seed(4)
    p, sigma, eta = 20, 1.0, 0.5
    mu = torch.full((p,), 0.3, dtype=torch.float64)
    b_star = p * sigma**2 / (eta**2 * float(mu @ mu))  # = 44.4
    G = mu + sigma * torch.randn(4000, p, generator=gen, dtype=torch.float64)
    b_hat = norm_test(GradStats.from_samples(G), eta)
    assert abs(b_hat / b_star - 1) < 0.10
    ctrl = AdaptiveBatchSize("norm", eta=eta, initial_batch_size=4, max_batch_size=4000)
    small = mu + sigma * torch.randn(4, p, generator=gen, dtype=torch.float64)
    assert ctrl.update(GradStats.from_samples(small)) > 4


def test_coordinate_quantile_is_robust_to_tiny_coordinates() -> None:
    gen = torch.Generator().manual_seed(8)
    G = 1.0 + 0.1 * torch.randn(50, 20, generator=gen, dtype=torch.float64)
    G[:, 0] = 0.001 * torch.randn(50, generator=gen, dtype=torch.float64)  # g_0 ≈ 0
    stats = GradStats.from_samples(G)
    worst = coordinate_norm_test(stats, 0.5)
    robust = coordinate_norm_test(stats, 0.5, reduce="quantile", q=0.9)
    ratios = stats.variance / (0.25 * stats.mean.pow(2))
    assert worst == pytest.approx(float(ratios.max()))
    assert robust == pytest.approx(float(torch.quantile(ratios, 0.9)))
    assert robust < 1e-2 * worst
