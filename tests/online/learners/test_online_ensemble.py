"""The dynamic-regret ensemble and its step grid (online.learners.ensemble)."""

import itertools
import math

import pytest
import torch
from _online_helpers import _grads, _play, _zeros

from optforge.online import (
    Ball,
    OptimisticEnsemble,
    OptimisticOGD,
    Unconstrained,
    ensemble_step_sizes,
    sea_stream,
)


def test_ensemble_with_one_expert_is_that_expert():
    grads = _grads(n=40, d=3)
    ens = OptimisticEnsemble(_zeros(3), Ball(1.0), horizon=40, grad_bound=2.0, step_sizes=[0.05])
    single = OptimisticOGD(_zeros(3), Ball(1.0), step="fixed", lr=0.05)
    assert torch.equal(_play(ens, grads), _play(single, grads))


def test_ensemble_grid_weights_and_domain():
    etas = ensemble_step_sizes(10_000, 2.0, 2.0, smoothness=1.0)
    assert etas[0] == pytest.approx(2.0 / (2.0 * math.sqrt(80_000)))
    assert max(etas) <= 0.25 and all(b > a for a, b in itertools.pairwise(etas))
    stream = sea_stream("drift", dim=4, horizon=300, sigma=0.1, seed=0)
    ens = OptimisticEnsemble(_zeros(4), Ball(1.0), horizon=300, grad_bound=2.0, smoothness=1.0)
    for t in range(300):
        x = ens.predict()
        assert Ball(1.0).contains(x, atol=1e-12)
        p = ens.weights
        assert bool((p >= 0).all()) and abs(float(p.sum()) - 1) < 1e-12
        ens.update(stream.grad(t, x))


def test_meta_step_is_capped_at_hedge_step_for_range_gd():
    """meta δ = (GD)²: η_t ≤ √(ln N)/(GD); with δ = 1e-8 the first step was ~1e4 and the
    weights jumped onto one base learner after one round."""
    g_bound, diam = 2.0, 2.0
    stream = sea_stream("switch", dim=4, horizon=200, sigma=0.3, period=50, seed=0)
    ens = OptimisticEnsemble(_zeros(4), Ball(1.0), horizon=200, grad_bound=g_bound, smoothness=1)
    n = len(ens.step_sizes)
    assert ens.meta_delta == pytest.approx((g_bound * diam) ** 2)
    cap = math.sqrt(math.log(n)) / (g_bound * diam)
    for t in range(200):
        assert float(ens.meta.step_size()) <= cap * (1 + 1e-12)
        x = ens.predict()
        ens.update(stream.grad(t, x))
        if t == 0:
            assert float(ens.weights.max()) < 0.5  # no jump onto one expert after one round


def test_ensemble_needs_meta_delta_on_unbounded_domain():
    with pytest.raises(ValueError, match="meta_delta"):
        OptimisticEnsemble(_zeros(2), Unconstrained(), horizon=10, grad_bound=1.0, step_sizes=[0.1])
    ens = OptimisticEnsemble(
        _zeros(2), Unconstrained(), horizon=10, grad_bound=1.0, step_sizes=[0.1], meta_delta=1.0
    )
    assert ens.meta_delta == 1.0
