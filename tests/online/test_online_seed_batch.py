"""Independent streams played as one batch (issue #34): ``play_online`` on stacked streams gives
each stream's losses bit for bit, ``online_regret`` is ``run_online``'s bookkeeping, and the
``optimistic-omd`` reproduction's batched run equals its per-seed run bit for bit."""

import pytest
import torch

from optforge.online import (
    FTRL,
    OGD,
    ONS,
    Ball,
    LeastSquaresStream,
    OptimisticEnsemble,
    OptimisticFTRL,
    OptimisticOGD,
    OptimisticONS,
    QuadraticStream,
    online_regret,
    play_online,
    run_online,
    sea_least_squares,
    sea_stream,
)
from optforge.repro.papers import optimistic_omd

F64 = torch.float64
KINDS = (("stochastic", 1.0), ("drift", 0.3), ("switch", 0.0), ("alternating", 0.0))

QUADRATIC = {
    "opt-ogd": lambda x0: OptimisticOGD(x0, Ball(1.0), smoothness=1.0),
    "ogd": lambda x0: OGD(x0, Ball(1.0)),
    "ftrl": lambda x0: FTRL(x0, Ball(1.0)),
    "opt-ftrl": lambda x0: OptimisticFTRL(x0, Ball(1.0), smoothness=1.0),
    "ensemble": lambda x0: OptimisticEnsemble(
        x0, Ball(1.0), horizon=300, grad_bound=2.9, smoothness=1.0
    ),
    "fixed-lr": lambda x0: OptimisticOGD(
        x0,
        Ball(1.0),
        step="fixed",
        lr=torch.linspace(0.01, 0.3, x0.shape[-2], dtype=F64).expand(x0.shape[:-1]).clone(),
    ),
}
LEAST_SQUARES = {
    "ogd": lambda x0: OGD(x0, Ball(1.0)),
    "ons": lambda x0: ONS(x0, Ball(1.0), exp_concavity=0.25, grad_bound=2.0),
    "opt-ons": lambda x0: OptimisticONS(
        x0, Ball(1.0), exp_concavity=0.25, grad_bound=2.0, smoothness=1.0
    ),
}


def _seed_streams(seed, horizon=300):
    return QuadraticStream.stack(
        [
            sea_stream(k, dim=10, horizon=horizon, sigma=s, seed=10 * seed + i)
            for i, (k, s) in enumerate(KINDS)
        ]
    )


@pytest.mark.parametrize("name", sorted(QUADRATIC))
def test_play_online_seed_batch_is_each_seed_bitwise(name):
    streams = [_seed_streams(seed) for seed in range(3)]
    batched = play_online(
        QUADRATIC[name](torch.zeros(3, 4, 10, dtype=F64)), QuadraticStream.stack(streams)
    )
    assert batched.shape == (300, 3, 4)
    for i, stream in enumerate(streams):
        alone = play_online(QUADRATIC[name](torch.zeros(4, 10, dtype=F64)), stream)
        assert torch.equal(batched[:, i], alone)


def test_ensemble_seed_batch_is_each_unbatched_learner_bitwise():
    """The reproduction's ensemble plays one ``(d,)`` learner per stream; batched over seeds."""
    streams = [sea_stream("drift", dim=10, horizon=300, sigma=0.3, seed=s) for s in range(3)]
    learner = QUADRATIC["ensemble"](torch.zeros(3, 10, dtype=F64))
    batched = play_online(learner, QuadraticStream.stack(streams))
    for i, stream in enumerate(streams):
        alone = QUADRATIC["ensemble"](torch.zeros(10, dtype=F64))
        assert torch.equal(batched[:, i], play_online(alone, stream))
        assert torch.equal(learner.weights[i], alone.weights)


@pytest.mark.parametrize("name", sorted(LEAST_SQUARES))
def test_play_online_least_squares_batch_is_each_stream_bitwise(name):
    streams = [
        sea_least_squares(k, dim=5, horizon=200, sigma=0.1, seed=s)
        for s in range(2)
        for k in ("stochastic", "drift", "switch")
    ]
    stacked = LeastSquaresStream.stack(streams)
    assert stacked.features.shape == (200, 6, 5) and stacked.targets.shape == (200, 6)
    batched = play_online(LEAST_SQUARES[name](torch.zeros(6, 5, dtype=F64)), stacked)
    for i, stream in enumerate(streams):
        alone = play_online(LEAST_SQUARES[name](torch.zeros(5, dtype=F64)), stream)
        assert torch.equal(batched[:, i], alone)


def test_loss_and_grad_is_loss_and_grad_bitwise():
    x = 0.3 * torch.ones(2, 5, dtype=F64)
    quad = QuadraticStream.stack(
        [sea_stream("drift", dim=5, horizon=4, sigma=0.5, seed=s) for s in range(2)]
    )
    ls = LeastSquaresStream.stack(
        [sea_least_squares("switch", dim=5, horizon=4, sigma=0.5, seed=s) for s in range(2)]
    )
    for stream in (quad, ls):
        loss, grad = stream._loss_and_grad(2, x)
        assert torch.equal(loss, stream.loss(2, x)) and torch.equal(grad, stream.grad(2, x))


def test_run_online_is_play_then_online_regret():
    stream = _seed_streams(0, horizon=200)
    out = run_online(QUADRATIC["opt-ogd"](torch.zeros(4, 10, dtype=F64)), stream)
    losses = play_online(QUADRATIC["opt-ogd"](torch.zeros(4, 10, dtype=F64)), stream)
    again = online_regret(stream, losses)
    assert out.keys() == again.keys() and out["checkpoints"] == again["checkpoints"]
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, again[key]), key
    with pytest.raises(ValueError, match="losses must have shape"):
        online_regret(stream, losses[:, :2])
    with pytest.raises(ValueError, match="losses must have shape"):
        online_regret(stream, losses[1:])
    with pytest.raises(ValueError, match="checkpoints"):
        online_regret(stream, losses, checkpoints=[201])
    with pytest.raises(ValueError, match="empty"):
        LeastSquaresStream.stack([])


def test_optimistic_omd_batched_run_is_per_seed_run_bitwise():
    config = {
        **optimistic_omd.CONFIGS["smoke"],
        "envs": optimistic_omd.CONFIGS["quick"]["envs"],
        "ls_kinds": optimistic_omd.CONFIGS["quick"]["ls_kinds"],
        "horizon": 200,
        "t_short": 50,
        "n_checkpoints": 4,
        "ls_horizon": 100,
        "ens_horizon": 200,
        "ens_switch_period": 40,
    }
    seeds, arms = (100, 101), optimistic_omd.ARMS
    batched = optimistic_omd.run_seeds(config, seeds, "cpu", arms)
    for seed in seeds:
        assert batched[seed] == optimistic_omd.run(config, seed, "cpu", arms)


def test_ball_projection_fast_path_is_the_centred_formula_bitwise():
    """``Ball(R)`` (no centre) skips ``y − 0`` and keeps ``0 + w`` as ``w.add(0)``: the values of
    the general formula, signed zeros included."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        y = 2 * torch.randn(64, 5, generator=gen, dtype=torch.float64).to(dtype)
        y[0] = -0.0
        y[1] = y[1] / torch.linalg.vector_norm(y[1])  # on the sphere
        y[2, :2] = -0.0
        fast = Ball(0.9).project(y)
        general = Ball(0.9, center=torch.zeros(5, dtype=dtype)).project(y)
        assert fast.dtype == dtype
        assert torch.equal(fast, general)
        assert torch.equal(torch.signbit(fast), torch.signbit(general))


def test_update_check_takes_finite_tensors_with_overflowing_sums():
    learner = OGD(torch.zeros(2, dtype=F64), Ball(1.0))
    learner.update(torch.tensor([1e308, 1e308], dtype=F64))  # finite, sum overflows: accepted
    assert learner.t == 1
    with pytest.raises(ValueError, match="grad contains 1 non-finite"):
        learner.update(torch.tensor([1.0, float("-inf")], dtype=F64))
    grad = torch.ones(2, dtype=torch.float32, requires_grad=True)
    learner.update(grad)
    assert learner.t == 2 and not learner.x.requires_grad and learner.x.dtype == F64


def test_ensemble_reuses_the_base_points_of_its_last_update():
    grads = 2 * torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    cached = OptimisticEnsemble(torch.zeros(3, dtype=F64), Ball(1.0), horizon=40, grad_bound=4.0)
    fresh = OptimisticEnsemble(torch.zeros(3, dtype=F64), Ball(1.0), horizon=40, grad_bound=4.0)
    for g in grads:
        fresh._next_base = None  # recompute the base points every round
        assert torch.equal(cached.predict(), fresh.predict())
        cached.update(g)
        fresh.update(g)
    assert torch.equal(cached.weights, fresh.weights)
