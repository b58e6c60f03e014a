"""Mathematics of the online learners (spec optimistic_omd.md §7)."""

import io
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from optforge.online import (
    FTRL,
    OGD,
    ONS,
    Ball,
    Box,
    OptimisticEnsemble,
    OptimisticFTRL,
    OptimisticOGD,
    OptimisticOMD,
    OptimisticONS,
    Simplex,
    Unconstrained,
    ensemble_step_sizes,
    run_online,
    sea_stream,
)

F64 = torch.float64


def _zeros(*shape):
    return torch.zeros(*shape, dtype=F64)


def _play(learner, grads):
    """Play a fixed gradient sequence; returns the points played."""
    xs = []
    for g in grads:
        xs.append(learner.predict().clone())
        learner.update(g)
    return torch.stack(xs)


def _grads(n=50, d=4, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=gen, dtype=F64)


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


def test_mirror_steps_stay_in_domain():
    grads = _grads(n=40, d=3, scale=5.0)
    for domain in (Ball(0.5), Box(-0.2, 0.3)):
        for cls in (OptimisticOGD, OGD, FTRL, OptimisticFTRL):
            kw = {"smoothness": 1.0} if cls in (OptimisticOGD, OptimisticFTRL) else {}
            xs = _play(cls(_zeros(3), domain, **kw), grads)
            assert domain.contains(xs, atol=1e-12), cls.__name__


def test_ftrl_closed_form():
    grads = _grads(n=10, d=3)
    learner = FTRL(_zeros(3), Ball(1.0), step="fixed", lr=0.05)
    xs = _play(learner, grads)
    for t in range(1, 10):
        y = -0.05 * grads[:t].sum(0)
        torch.testing.assert_close(xs[t], Ball(1.0).project(y), rtol=0, atol=1e-14)
    # optimistic: Π(−η(S_{t−1} + g_{t−1}))
    opt = OptimisticFTRL(_zeros(3), Ball(1.0), step="fixed", lr=0.05)
    xs = _play(opt, grads)
    for t in range(1, 10):
        y = -0.05 * (grads[:t].sum(0) + grads[t - 1])
        torch.testing.assert_close(xs[t], Ball(1.0).project(y), rtol=0, atol=1e-14)


def test_batched_learner_equals_independent_learners():
    grads = _grads(n=30, d=4).reshape(30, 2, 2)  # batch of 2 problems in d = 2
    batched = _play(OptimisticOGD(_zeros(2, 2), Ball(1.0), smoothness=1.0), grads)
    for i in range(2):
        single = _play(OptimisticOGD(_zeros(2), Ball(1.0), smoothness=1.0), grads[:, i])
        torch.testing.assert_close(batched[:, i], single, rtol=0, atol=1e-15)


def _ons_reference(x0, grads, beta, delta, radius, outer="grad"):
    """Slow optimistic ONS: numpy + SLSQP for every Mahalanobis projection."""

    def proj(y, u):
        if np.linalg.norm(y) <= radius:
            return y
        res = minimize(
            lambda x: (x - y) @ u @ (x - y),
            y * radius / np.linalg.norm(y),
            jac=lambda x: 2 * u @ (x - y),
            constraints=[{"type": "ineq", "fun": lambda x: radius**2 - x @ x}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        return res.x

    d = len(x0)
    u, xhat, hint, xs = delta * np.eye(d), x0.copy(), np.zeros(d), []
    for g in grads:
        xs.append(proj(xhat - np.linalg.solve(u, hint), u))
        xhat = proj(xhat - np.linalg.solve(u, g), u)
        v = g if outer == "grad" else g - hint
        u = u + 0.5 * beta * np.outer(v, v)
        hint = g
    return np.array(xs)


@pytest.mark.parametrize("outer", ["grad", "diff"])
def test_optimistic_ons_matches_slsqp_reference(outer):
    grads = _grads(n=15, d=3, scale=3.0)
    learner = OptimisticONS(
        _zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=1.0, delta=0.5, outer=outer
    )
    xs = _play(learner, grads)
    ref = _ons_reference(np.zeros(3), grads.numpy(), learner.beta, 0.5, 0.5, outer)
    assert float(torch.linalg.vector_norm(xs, dim=-1).max()) > 0.49  # projections were active
    np.testing.assert_allclose(xs.numpy(), ref, rtol=0, atol=1e-6)


def test_ons_with_large_delta_is_ogd():
    grads = _grads(n=20, d=3, scale=0.5)
    delta = 1e7
    ons = OptimisticONS(
        _zeros(3), Ball(1.0), exp_concavity=1.0, grad_bound=1.0, delta=delta, hint="zero"
    )
    ogd = OGD(_zeros(3), Ball(1.0), step="fixed", lr=1 / delta)
    torch.testing.assert_close(_play(ons, grads), _play(ogd, grads), rtol=1e-5, atol=1e-12)
    classic = ONS(_zeros(3), Ball(1.0), exp_concavity=1.0, grad_bound=1.0, delta=delta)
    ogd2 = OGD(_zeros(3), Ball(1.0), step="fixed", lr=1 / (delta * classic.beta))
    torch.testing.assert_close(_play(classic, grads), _play(ogd2, grads), rtol=1e-5, atol=1e-12)


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


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OptimisticOGD(_zeros(3), Ball(1.0), smoothness=1.0),
        lambda: OGD(_zeros(3), Ball(1.0)),
        lambda: FTRL(_zeros(3), Ball(1.0)),
        lambda: OptimisticFTRL(_zeros(3), Ball(1.0), smoothness=1.0),
        lambda: OptimisticONS(
            _zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=4.0, outer="diff"
        ),
        lambda: ONS(_zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=4.0),
        lambda: OptimisticEnsemble(
            _zeros(3), Ball(1.0), horizon=100, grad_bound=4.0, smoothness=1.0
        ),
    ],
)
def test_state_dict_round_trip_continues_identically(make):
    grads = _grads(n=30, d=3)
    first = make()
    _play(first, grads[:15])
    saved = _roundtrip(first.state_dict())
    second = make()
    second.load_state_dict(saved)
    assert torch.equal(_play(first, grads[15:]), _play(second, grads[15:]))


def test_bad_inputs_name_the_argument():
    x0 = _zeros(3)
    with pytest.raises(ValueError, match="lr"):
        OptimisticOGD(x0, Ball(1.0), step="fixed", lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        OGD(x0, Ball(1.0), step="fixed", lr=-1.0)
    with pytest.raises(ValueError, match="strong_convexity"):
        OptimisticOGD(x0, Ball(1.0), step="strongly_convex", strong_convexity=0.0, smoothness=1.0)
    with pytest.raises(ValueError, match="exp_concavity"):
        OptimisticONS(x0, Ball(1.0), exp_concavity=0.0, grad_bound=1.0)
    with pytest.raises(ValueError, match="delta"):
        OptimisticOGD(x0, Ball(1.0), delta=-1.0, smoothness=1.0)
    with pytest.raises(ValueError, match="step"):
        OptimisticOGD(x0, Ball(1.0), step="newton", smoothness=1.0)
    with pytest.raises(ValueError, match="x0"):
        OptimisticOGD(torch.ones(3, dtype=F64), Ball(1.0), smoothness=1.0)
    with pytest.raises(ValueError, match="bounded"):
        OptimisticOGD(x0, Unconstrained(), smoothness=1.0)
    learner = OptimisticOGD(x0, Ball(1.0), smoothness=1.0)
    with pytest.raises(ValueError, match="grad"):
        learner.update(torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="grad"):
        learner.update(torch.tensor([0.0, float("nan"), 0.0], dtype=F64))
    with pytest.raises(ValueError, match="hint"):
        learner.update(x0, hint=torch.tensor([float("inf"), 0.0, 0.0], dtype=F64))
    with pytest.raises(TypeError, match="grad"):
        learner.update([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="Simplex"):
        OptimisticOMD(x0, Ball(1.0), mirror="entropic")
    assert learner.t == 0  # rejected updates leave the state untouched


def test_fixed_step_needs_no_warning_and_works_unconstrained():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner = OptimisticOGD(_zeros(2), Unconstrained(), step="fixed", lr=0.1)
    learner.update(torch.ones(2, dtype=F64))
    torch.testing.assert_close(learner.predict(), torch.full((2,), -0.2, dtype=F64))
