"""AdaptiveBatchSize: the update rule, edge cases, bad hyper-parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _adadagrad_helpers import HAND_G, _data, _mlp

from optforge.optim import (
    AdAdaGrad,
    AdAdaGradNorm,
    AdaptiveBatchSize,
    GradStats,
)
from optforge.optim.adadagrad import (
    TESTS,
    norm_test,
)


def test_update_rule_ceil_max_and_cap() -> None:
    stats = GradStats.from_samples(torch.from_numpy(HAND_G))
    b_hat = norm_test(stats, 0.5)  # ≈ 6.08
    ctrl = AdaptiveBatchSize("norm", eta=0.5, initial_batch_size=4, max_batch_size=100)
    assert ctrl.propose(stats) == math.ceil(b_hat) and ctrl.batch_size == 4  # pure
    assert ctrl.update(stats) == math.ceil(b_hat)
    ctrl = AdaptiveBatchSize("norm", eta=0.5, initial_batch_size=40, max_batch_size=100)
    assert ctrl.update(stats) == 40  # never shrinks
    ctrl = AdaptiveBatchSize("norm", eta=0.5, initial_batch_size=4, max_batch_size=5)
    assert ctrl.update(stats) == 5  # capped
    assert not ctrl.should_test()  # at the cap the test is skipped
    ctrl = AdaptiveBatchSize("norm", eta=0.5, initial_batch_size=4, test_interval=3)
    assert [ctrl.should_test(k) for k in range(4)] == [True, False, False, True]


def test_batch_size_never_shrinks_and_respects_cap_on_random_statistics() -> None:
    gen = torch.Generator().manual_seed(3)
    for test in TESTS:
        ctrl = AdaptiveBatchSize(
            test, eta=0.7, theta=0.5, nu=0.5, initial_batch_size=2, max_batch_size=300
        )
        sizes = [ctrl.batch_size]
        for _ in range(30):
            scale = float(torch.rand((), generator=gen)) * 3
            G = torch.randn(5, 4, generator=gen, dtype=torch.float64) + scale
            ctrl.update(GradStats.from_samples(G, ref=G.mean(0)))
            sizes.append(ctrl.batch_size)
        assert sizes == sorted(sizes), test
        assert max(sizes) <= 300


def test_one_example_skips_the_test_and_keeps_the_batch_size() -> None:
    G = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    stats = GradStats.from_samples(G)
    with pytest.raises(ValueError, match="no sample variance"):
        norm_test(stats, 0.5)
    ctrl = AdaptiveBatchSize(initial_batch_size=4, max_batch_size=50)
    assert ctrl.update(stats) == 4 and "fewer than 2" in ctrl.last_test["skipped"]
    # the optimizer falls back to a plain backward for a one-example batch
    model = _mlp()
    x, y = _data(1)
    opt = AdAdaGrad(model.parameters(), initial_batch_size=4, max_batch_size=50)
    opt.backward(model, F.cross_entropy, x, y)
    opt.step()
    assert opt.batch_size == 4 and not opt.last_test["tested"]


def test_zero_gradient_goes_to_the_cap_without_nan() -> None:
    G = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    for test in TESTS:
        stats = GradStats.from_samples(G, ref=G.mean(0))
        ctrl = AdaptiveBatchSize(test, initial_batch_size=2, max_batch_size=64)
        assert ctrl.update(stats) == 64, test
        uncapped = AdaptiveBatchSize(test, initial_batch_size=2)
        assert uncapped.update(stats) == 2 and "infinite" in uncapped.last_test["skipped"]


def test_nan_statistics_are_reported() -> None:
    G = torch.tensor([[1.0, float("nan")], [0.5, 1.0]], dtype=torch.float64)
    for test in ("norm", "coordinate_norm"):
        with pytest.raises(ValueError, match="non-finite"):
            AdaptiveBatchSize(test).update(GradStats.from_samples(G))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eta": 0.0}, "eta"),
        ({"eta": -1.0}, "eta"),
        ({"theta": 0.0}, "theta"),
        ({"nu": -0.1}, "nu"),
        ({"initial_batch_size": 1}, "initial_batch_size"),
        ({"initial_batch_size": 16, "max_batch_size": 8}, "max_batch_size"),
        ({"test": "bogus"}, "test"),
        ({"test_interval": 0}, "test_interval"),
        ({"coord_reduce": "mean"}, "coord_reduce"),
        ({"q": 1.5}, "q"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        AdaptiveBatchSize(**kwargs)
    params = [torch.zeros(2, requires_grad=True)]
    for cls in (AdAdaGrad, AdAdaGradNorm):
        with pytest.raises(ValueError, match=name):
            cls(params, **kwargs)


def test_test_parameters_changed_later_are_checked_at_the_next_test() -> None:
    G = torch.from_numpy(HAND_G)
    stats, ip_stats = GradStats.from_samples(G), GradStats.from_samples(G, ref=G.mean(0))
    ctrl = AdaptiveBatchSize("norm", eta=0.5, initial_batch_size=2)
    first = ctrl.proposal(stats)
    ctrl.theta = -1.0  # not a parameter of the norm test: unused, as in norm_test
    assert ctrl.proposal(stats) == first
    for bad in (-1.0, float("nan"), True):
        ctrl.eta = bad
        with pytest.raises(ValueError, match="eta"):
            ctrl.proposal(stats)
    ctrl.eta = 0.5
    assert ctrl.proposal(stats) == first
    ctrl.test = "augmented_inner_product"  # now theta is used: checked although unchanged
    with pytest.raises(ValueError, match="theta"):
        ctrl.proposal(ip_stats)
    ctrl.theta = 0.5
    ctrl.load_state_dict({**ctrl.state_dict(), "nu": 0.0})
    with pytest.raises(ValueError, match="nu"):
        ctrl.proposal(ip_stats)
