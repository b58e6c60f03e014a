"""SEA loss streams and regret bookkeeping (spec optimistic_omd.md §6, §7.5)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from optforge.online import (
    OGD,
    Ball,
    OptimisticOGD,
    QuadraticStream,
    run_online,
    sea_least_squares,
    sea_means,
    sea_stream,
)

F64 = torch.float64


def test_comparator_equals_projected_gradient_descent():
    stream = sea_stream("switch", dim=4, horizon=300, sigma=0.5, amplitude=1.5, period=1000, seed=1)
    u = stream.comparator()
    assert float(torch.linalg.vector_norm(u)) == pytest.approx(1.0)  # the constraint is active
    x = torch.zeros(4, dtype=F64)
    for _ in range(10_000):  # brute force: projected GD on Σ_t f_t with step 0.5/T
        x = Ball(1.0).project(x - 0.5 / 300 * (x - stream.centers).sum(0))
    torch.testing.assert_close(u, x, rtol=0, atol=1e-10)
    best = stream.prefix_comparator_losses([300])[0]
    torch.testing.assert_close(best, 0.5 * ((stream.centers - x) ** 2).sum(), rtol=1e-12, atol=0)


def test_least_squares_comparator_matches_slsqp():
    stream = sea_least_squares(
        "drift", dim=3, horizon=200, sigma=0.3, amplitude=3.0, period=100, seed=0
    )
    a, b = stream.features.numpy(), stream.targets.numpy()
    res = minimize(
        lambda x: 0.5 * ((a @ x - b) ** 2).sum(),
        np.zeros(3),
        jac=lambda x: a.T @ (a @ x - b),
        constraints=[{"type": "ineq", "fun": lambda x: 1 - x @ x}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    ours = float(stream.prefix_comparator_losses([200])[0])
    assert ours == pytest.approx(res.fun, rel=1e-8)


def test_noise_variance_is_sigma_squared():
    stream = sea_stream("stochastic", dim=10, horizon=20_000, sigma=0.7, seed=3)
    sq = ((stream.centers - stream.means) ** 2).sum(-1)
    mean, se = float(sq.mean()), float(sq.std()) / math.sqrt(sq.numel())
    assert abs(mean - 0.49) < 4 * se
    assert float(stream.sigma2()) == pytest.approx(20_000 * 0.49)


def test_adversarial_variation_closed_forms():
    horizon = 2000
    switch = sea_stream("switch", dim=3, horizon=horizon, seed=0)
    flips = horizon // 500 - 1
    assert float(switch.Sigma2()) == pytest.approx((1 + 0.8) ** 2 + flips * 1.6**2)
    alt = sea_stream("adversarial", dim=3, horizon=horizon, seed=0)
    assert float(alt.Sigma2()) == pytest.approx((1 + 0.8) ** 2 + (horizon - 1) * 1.6**2)
    drift = sea_means("drift", dim=2, horizon=4000, period=2000)
    torch.testing.assert_close(drift[1999], torch.tensor([0.8, 0.0], dtype=F64))
    stoch = sea_stream("stochastic", dim=4, horizon=10, seed=0)
    assert float(stoch.Sigma2()) == pytest.approx((1 + 0.5) ** 2)


def test_run_online_curve_and_dynamic_regret():
    streams = [
        sea_stream(k, dim=3, horizon=400, sigma=0.2, seed=i)
        for i, k in enumerate(["drift", "switch"])
    ]
    stacked = QuadraticStream.stack(streams)
    out = run_online(
        OptimisticOGD(torch.zeros(2, 3, dtype=F64), Ball(1.0), smoothness=1.0),
        stacked,
        checkpoints=[100, 400],
    )
    assert out["regret_curve"].shape == (2, 2)
    torch.testing.assert_close(out["regret_curve"][-1], out["static_regret"])
    single = run_online(
        OptimisticOGD(torch.zeros(3, dtype=F64), Ball(1.0), smoothness=1.0), streams[1]
    )
    torch.testing.assert_close(out["static_regret"][1], single["static_regret"])
    u = streams[1].minimizers()
    expected = single["cumulative_loss"] - 0.5 * ((u - streams[1].centers) ** 2).sum()
    torch.testing.assert_close(single["dynamic_regret"], expected)


def test_streams_are_seeded_and_reject_bad_input():
    a = sea_stream("drift", dim=3, horizon=50, sigma=1.0, seed=7)
    b = sea_stream("drift", dim=3, horizon=50, sigma=1.0, seed=7)
    assert torch.equal(a.centers, b.centers)
    with pytest.raises(ValueError, match="kind"):
        sea_stream("random", dim=3, horizon=5)
    with pytest.raises(ValueError, match="sigma"):
        sea_stream("drift", dim=3, horizon=5, sigma=-1.0)
    with pytest.raises(ValueError, match="horizon"):
        sea_stream("drift", dim=3, horizon=0)
    with pytest.raises(ValueError, match="checkpoints"):
        run_online(OGD(torch.zeros(3, dtype=F64), Ball(1.0)), a, checkpoints=[51])
