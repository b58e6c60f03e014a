"""OptimisticSGD: the conformance suite, the OGDA recursion and a bilinear game."""

import pytest
import torch

from optforge.online import OptimisticOGD, Unconstrained
from optforge.optim import OptimisticSGD
from optforge.testing import ConvergenceSettings, check_optimizer


@pytest.mark.slow
def test_conformance():
    check_optimizer(
        lambda params, lr=0.02, **kw: OptimisticSGD(params, lr=lr, **kw),
        quadratic=ConvergenceSettings(steps=1500, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=20_000, tol=1e-2, hyperparams={"lr": 1.3e-3}),
        bad_hyperparams={"lr": -1.0, "optimism": -0.5},
    )


def test_matches_the_online_learner_and_the_recursion():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    h, c = (
        a @ a.T / 5 + torch.eye(5, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = OptimisticSGD([p], lr=0.05)
    learner = OptimisticOGD(
        torch.zeros(5, dtype=torch.float64), Unconstrained(), step="fixed", lr=0.05
    )
    prev = torch.zeros(5, dtype=torch.float64)
    for _ in range(30):
        x = learner.predict()
        torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-13)
        g = h @ x - c
        learner.update(g)
        before = p.detach().clone()
        opt.zero_grad()
        (0.5 * p @ h @ p - c @ p).backward()
        opt.step()
        torch.testing.assert_close(p.detach(), before - 0.05 * (2 * g - prev), rtol=0, atol=1e-13)
        prev = g


def _bilinear(optimizer_cls, steps=2000, **kw):
    x = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    y = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = optimizer_cls([{"params": [x]}, {"params": [y], "maximize": True}], lr=0.1, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (x * y).sum().backward()
        opt.step()
    return float(torch.hypot(x.detach(), y.detach()).squeeze())


def test_bilinear_game_converges_where_gda_diverges():
    assert _bilinear(OptimisticSGD) < 1e-3
    assert _bilinear(OptimisticSGD, optimism=0.0) > 10.0  # plain simultaneous GDA spirals out
    assert _bilinear(torch.optim.SGD) > 10.0


def test_rejects_bad_hyperparameters():
    p = [torch.zeros(2, requires_grad=True)]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            OptimisticSGD(p, lr=bad)
    with pytest.raises(ValueError, match="optimism"):
        OptimisticSGD(p, lr=0.1, optimism=float("nan"))


def test_lr_zero_is_accepted_as_documented():
    """lr = 0 (a scheduler's warm-up) freezes the parameters but records g_t for the next step."""
    p = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = OptimisticSGD([p], lr=0.0)
    p.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2, dtype=torch.float64))
    opt.param_groups[0]["lr"] = 0.1
    p.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    opt.step()  # 1 - 0.1 * (2 * g_2 - g_1)
    expected = torch.tensor([1 - 0.1 * (6 - 1), 1 - 0.1 * (0 + 2)], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected)


def test_check_finite_is_opt_in_and_changes_nothing():
    p = torch.ones(3, requires_grad=True)
    opt = OptimisticSGD([p], lr=0.1, check_finite=True)
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    before_p, before_state = p.detach().clone(), opt.state[p]["prev_grad"].clone()
    p.grad = torch.tensor([1.0, float("nan"), 3.0])
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step()
    assert torch.equal(p.detach(), before_p)
    assert torch.equal(opt.state[p]["prev_grad"], before_state)
    # default: torch.optim semantics, the NaN propagates (no host sync)
    q = torch.ones(3, requires_grad=True)
    lax = OptimisticSGD([q], lr=0.1)
    q.grad = torch.tensor([1.0, float("nan"), 3.0])
    lax.step()
    assert torch.isnan(q.detach()[1])


@pytest.mark.slow
def test_conformance_with_check_finite():
    check_optimizer(
        lambda params, lr=0.02, **kw: OptimisticSGD(params, lr=lr, check_finite=True, **kw),
        quadratic=ConvergenceSettings(steps=1500, tol=1e-4),
        bad_hyperparams={"lr": -1.0, "optimism": -0.5},
        checks=["downhill", "add_param_group", "raising_step"],
        nonfinite_raises=True,
    )


@pytest.mark.parametrize("maximize", [False, True])
def test_tensor_lr_matches_float_lr_under_a_scheduler(maximize):
    a = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    b = torch.nn.Parameter(a.detach().clone())
    oa = OptimisticSGD([a], lr=0.1, maximize=maximize)
    ob = OptimisticSGD([b], lr=torch.tensor(0.1), maximize=maximize)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=1, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=1, gamma=0.5)
    for k in range(4):
        a.grad = torch.cos(a.detach() + k)
        b.grad = torch.cos(b.detach() + k)
        oa.step(), ob.step(), sa.step(), sb.step()
    assert isinstance(ob.param_groups[0]["lr"], torch.Tensor)
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lr"):
        OptimisticSGD([b], lr=torch.tensor(-0.1))
