"""Optimistic online mirror descent: steps, hints, mirror maps (online.learners.omd)."""

import itertools
import math

import numpy as np
import pytest
import torch
from _online_helpers import F64, _grads, _play, _zeros

from optforge.online import (
    OGD,
    Ball,
    OptimisticFTRL,
    OptimisticOGD,
    OptimisticOMD,
    Simplex,
    run_online,
    sea_stream,
)


def test_zero_hint_is_bit_identical_to_ogd():
    grads = _grads()
    a = OptimisticOGD(_zeros(4), Ball(1.0), step="fixed", lr=0.3, hint="zero")
    b = OGD(_zeros(4), Ball(1.0), step="fixed", lr=0.3)
    assert torch.equal(_play(a, grads), _play(b, grads))


def test_adaptive_step_matches_slow_reference_and_is_capped():
    grads = _grads(n=60, scale=1.0)  # the 1/(4L) cap binds early, the adaptive part later
    learner = OptimisticOGD(_zeros(4), Ball(1.0), smoothness=2.0, delta=1e-3)
    xhat, hint, var = np.zeros(4), np.zeros(4), 0.0
    etas = []
    for g in grads.numpy():
        eta = min(2.0 / math.sqrt(1e-3 + var), 1 / 8)
        etas.append(float(learner.step_size()))
        x = xhat - eta * hint
        x = x * min(1.0, 1.0 / np.linalg.norm(x)) if np.linalg.norm(x) > 0 else x
        np.testing.assert_allclose(learner.predict().numpy(), x, rtol=0, atol=1e-12)
        learner.update(torch.from_numpy(g))
        var += float(((g - hint) ** 2).sum())
        y = xhat - eta * g
        xhat = y * min(1.0, 1.0 / np.linalg.norm(y))
        hint = g
        assert etas[-1] == pytest.approx(eta, rel=1e-12)
    assert all(e <= 1 / 8 + 1e-15 for e in etas)
    assert all(b <= a for a, b in itertools.pairwise(etas))
    assert etas[0] == pytest.approx(1 / 8) and etas[-1] < 1 / 8


def test_no_smoothness_warns_and_is_uncapped():
    with pytest.warns(UserWarning, match="smoothness"):
        learner = OptimisticOGD(_zeros(3), Ball(1.0), delta=1e-6)
    assert float(learner.step_size()) == pytest.approx(2.0 / 1e-3)


def test_perfect_hint_plays_next_update_point():
    c = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    learner = OptimisticOGD(_zeros(3), Ball(1.0), step="fixed", lr=0.1)
    for t in range(20):
        x = learner.predict().clone()
        learner.update(c)
        if t >= 1:  # M_t = c from round 2: x_t equals x̂_{t+1}
            torch.testing.assert_close(x, learner.xhat, rtol=0, atol=0)


def test_zero_variation_regret_is_bounded():
    regrets = []
    for horizon in (500, 4000):
        stream = sea_stream("stochastic", dim=5, horizon=horizon, sigma=0.0, seed=0)
        learner = OptimisticOGD(_zeros(5), Ball(1.0), smoothness=1.0)
        regrets.append(float(run_online(learner, stream)["static_regret"]))
    assert regrets[1] < 2.0 and regrets[1] - regrets[0] < 1e-3


def test_exact_start_has_zero_regret():
    center = torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    stream = sea_stream("stochastic", dim=3, horizon=100, amplitude=0.0, seed=0)
    stream.centers = center.expand(100, 3).clone()
    for learner in (
        OptimisticOGD(center.clone(), Ball(1.0), smoothness=1.0),
        OGD(center.clone(), Ball(1.0)),
        OptimisticFTRL(center.clone(), Ball(1.0), smoothness=1.0),
    ):
        result = run_online(learner, stream)
        assert float(result["cumulative_loss"]) == 0.0  # the learner never leaves x*
        assert abs(float(result["static_regret"])) <= 1e-20  # comparator: round-off of the mean


def test_strongly_convex_steps():
    oogd = OptimisticOGD(
        _zeros(2), Ball(1.0), step="strongly_convex", strong_convexity=0.5, smoothness=1.0
    )
    ogd = OGD(_zeros(2), Ball(1.0), step="strongly_convex", strong_convexity=0.5)
    g = torch.tensor([1.0, 0.0], dtype=F64)
    for t in range(1, 5):
        assert oogd.step_size() == pytest.approx(2 / (0.5 * t + 8))
        oogd.update(g)
    ogd.update(g)  # x_2 = Π(0 − 1/(λ·1) g)
    torch.testing.assert_close(ogd.predict(), torch.tensor([-1.0, 0.0], dtype=F64))


def test_entropic_step_is_multiplicative_weights():
    losses = torch.rand(30, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0 = torch.full((5,), 0.2, dtype=F64)
    learner = OptimisticOMD(x0, Simplex(5), mirror="entropic", step="fixed", lr=0.7, hint="zero")
    w = x0.clone()
    for loss in losses:
        torch.testing.assert_close(learner.predict(), w, rtol=1e-12, atol=1e-15)
        learner.update(loss)
        w = w * torch.exp(-0.7 * loss)
        w = w / w.sum()
        assert Simplex(5).contains(learner.xhat, atol=1e-12) and bool((learner.xhat >= 0).all())


def test_optimistic_hedge_stays_on_simplex_and_drops_dominated_expert():
    gen = torch.Generator().manual_seed(1)
    learner = OptimisticOMD(torch.full((3,), 1 / 3, dtype=F64), Simplex(3), mirror="entropic")
    for _ in range(400):
        base = torch.rand(3, generator=gen, dtype=F64)
        learner.update(base + torch.tensor([0.0, 0.0, 0.5], dtype=F64))
        p = learner.predict()
        assert bool((p >= 0).all()) and abs(float(p.sum()) - 1) < 1e-12
    assert float(learner.predict()[2]) < 1e-3


def test_batched_learner_equals_independent_learners():
    grads = _grads(n=30, d=4).reshape(30, 2, 2)  # batch of 2 problems in d = 2
    batched = _play(OptimisticOGD(_zeros(2, 2), Ball(1.0), smoothness=1.0), grads)
    for i in range(2):
        single = _play(OptimisticOGD(_zeros(2), Ball(1.0), smoothness=1.0), grads[:, i])
        torch.testing.assert_close(batched[:, i], single, rtol=0, atol=1e-15)
