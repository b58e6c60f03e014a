"""Tests of GradNormSmoothNewton (the torch.optim form) and its closure curvature oracle."""

import math

import pytest
import torch

from optforge.optim import GradNormSmoothNewton, gns_minimize
from optforge.optim.hessian_approx import GaussNewton, LazyHessian
from optforge.optim.regularized_newton.optimizer import _ClosureOracle
from optforge.testing import ConvergenceSettings, check_optimizer

DT = torch.float64


def test_closure_oracle_hessian_matches_torch_func(lse_problem):
    _A, _b, _mu, f = lse_problem(seed=4)
    w = torch.full((20,), 0.2, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(f(w), [w], create_graph=True)
    oracle = _ClosureOracle(g, [w], DT)
    exact = torch.func.hessian(f)(w.detach())
    torch.testing.assert_close(oracle.hessian(), exact)
    v = torch.randn(20, dtype=DT)
    torch.testing.assert_close(oracle.hvp(v), exact @ v)


def _closure_step(opt, problem):
    return opt.step(problem.loss)


def test_check_optimizer_exact():
    check_optimizer(
        lambda params, **kw: GradNormSmoothNewton(params, hessian="exact", **kw),
        quadratic=ConvergenceSettings(steps=30, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=100, tol=1e-4),
        bad_hyperparams={
            "gamma0": 0.0,
            "max_search": 0,
            "lambda_eps": -1.0,
            "lambda_min": -1.0,
            "acceptance": "x",
            "solver": "qr",
            "lr": 0.1,
            "max_dense_dim": 0,
        },
        has_lr=False,
        step_fn=_closure_step,
        checks=[
            "downhill",
            "quadratic",
            "rosenbrock",
            "state_dict",
            "dtypes",
            "bad_hyperparams",
            "add_param_group",
            "raising_step",
        ],
        nonfinite_raises=True,
    )


def test_check_optimizer_backward_closure_with_first_order_member():
    """An LBFGS-style closure (zero_grad + backward) works with H ≡ 0 (gradient read from .grad)."""
    check_optimizer(
        lambda params, **kw: GradNormSmoothNewton(params, hessian="zero", **kw),
        quadratic=ConvergenceSettings(steps=300, tol=1e-4),
        has_lr=False,
        bad_hyperparams={"gamma0": -1.0},
        checks=[
            "downhill",
            "quadratic",
            "state_dict",
            "dtypes",
            "bad_hyperparams",
            "add_param_group",
            "raising_step",
        ],
        nonfinite_raises=True,
    )


def test_optimizer_matches_functional_over_param_groups(lse_problem):
    _A, _b, _mu, f = lse_problem(seed=6)
    w1 = torch.nn.Parameter(torch.ones(12, dtype=DT))
    w2 = torch.nn.Parameter(torch.ones(2, 4, dtype=DT))
    opt = GradNormSmoothNewton([{"params": [w1]}, {"params": [w2]}], hessian="exact")

    def closure():
        return f(torch.cat([w1, w2.reshape(-1)]))

    for _ in range(6):
        opt.step(closure)
    res = gns_minimize(f, torch.ones(20, dtype=DT), maxiter=6)
    torch.testing.assert_close(torch.cat([w1.detach(), w2.detach().reshape(-1)]), res.x)
    state = opt.state[w1]
    # the optimizer re-evaluates the closure at the start of every step (one extra call each)
    assert state["step"] == 6 and state["nfev"] == res.nfev + 5
    assert math.isclose(state["gamma"], res.gamma)


def test_optimizer_lazy_hessian_state_round_trip(lse_problem):
    _A, _b, _mu, f = lse_problem(seed=7)

    def run(n_first):
        w = torch.nn.Parameter(torch.ones(20, dtype=DT))
        opt = GradNormSmoothNewton([w], hessian=LazyHessian("exact", every=3))
        for _ in range(n_first):
            opt.step(lambda: f(w))
        return w, opt

    w_ref, opt_ref = run(4)
    saved = opt_ref.state_dict()
    for _ in range(4):
        opt_ref.step(lambda: f(w_ref))
    w_new = torch.nn.Parameter(torch.ones(20, dtype=DT))
    with torch.no_grad():
        w_new.copy_(run(4)[0])
    resumed = GradNormSmoothNewton([w_new], hessian=LazyHessian("exact", every=3))
    resumed.load_state_dict(saved)
    for _ in range(4):
        resumed.step(lambda: f(w_new))
    assert torch.equal(w_new, w_ref)


def test_optimizer_bad_inputs():
    w = torch.nn.Parameter(torch.ones(3, dtype=DT))
    opt = GradNormSmoothNewton([w])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="non-finite loss"):
        opt.step(lambda: (w**2).sum() * float("nan"))
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: w**2)
    with pytest.raises(ValueError, match="lr"):
        GradNormSmoothNewton([w], lr=0.1)
    with pytest.raises(ValueError, match="gamma0"):
        GradNormSmoothNewton(
            [{"params": [w]}, {"params": [torch.nn.Parameter(torch.ones(1))], "gamma0": 2.0}]
        )

    def backward_closure():
        opt.zero_grad()
        loss = (w**4).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"without calling loss\.backward"):
        opt.step(backward_closure)
    bad = GradNormSmoothNewton([w], hessian=-1e6 * torch.eye(3, dtype=DT), max_search=2)
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="hessian"):
        bad.step(lambda: (w**2).sum())
    assert torch.equal(w.detach(), before)  # parameters restored


def test_optimizer_gauss_newton_on_flat_params():
    """Approximations receive the flat parameter vector: Gauss–Newton on a small regression."""
    gen = torch.Generator().manual_seed(14)
    X, y = torch.randn(40, 3, generator=gen, dtype=DT), torch.randn(40, generator=gen, dtype=DT)
    w = torch.nn.Parameter(torch.zeros(3, dtype=DT))

    def residuals(x):
        return torch.tanh(X @ x) - 0.5 * torch.tanh(y)

    opt = GradNormSmoothNewton([w], hessian=GaussNewton(residuals))
    for _ in range(30):
        opt.step(lambda: 0.5 * (residuals(w) ** 2).sum())
    g = torch.func.grad(lambda x: 0.5 * (residuals(x) ** 2).sum())(w.detach())
    assert float(g.norm()) < 1e-8


# -- issue 24: non-finite gradients, add_param_group, a raising step changes nothing ---------
def test_nan_gradient_is_named_not_blamed_on_the_hessian():
    """Before: hessian="zero" with a NaN gradient reported "H + λB was not positive definite …
    λ = nan" after 40 factorisations."""
    v = torch.nn.Parameter(torch.ones(3, dtype=DT))
    opt = GradNormSmoothNewton([v], hessian="zero")

    def closure():
        return (v**2).sum() + 0.0 * torch.sqrt(v[0] - 1.0)  # finite loss, NaN gradient

    with pytest.raises(ValueError, match="non-finite gradient"):
        opt.step(closure)
    assert torch.equal(v.detach(), torch.ones(3, dtype=DT)) and len(opt.state) == 0
    with pytest.raises(ValueError, match="non-finite gradient"):
        gns_minimize(lambda x: (x**2).sum() + 0.0 * torch.sqrt(x[0] - 1.0), torch.ones(3, dtype=DT))


def test_add_param_group_after_construction_joins_the_system():
    a = torch.nn.Parameter(torch.ones(2, dtype=DT))
    b = torch.nn.Parameter(torch.ones(3, dtype=DT))
    opt = GradNormSmoothNewton([a], hessian="exact")
    with pytest.raises(ValueError, match="gamma0"):
        opt.add_param_group({"params": [b], "gamma0": 2.0})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [b], "lr": 0.1})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [b]})
    for _ in range(10):
        opt.step(lambda: ((a - 2) ** 2).sum() + ((b + 1) ** 2).sum())
    torch.testing.assert_close(b.detach(), -torch.ones(3, dtype=DT))
    fixed = GradNormSmoothNewton([a], hessian="exact", metric=torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="metric"):
        fixed.add_param_group({"params": [b]})
    assert len(fixed.param_groups) == 1


def test_raising_trial_restores_a_lazy_hessian():
    w = torch.nn.Parameter(torch.full((4,), 0.5, dtype=DT))
    lazy = LazyHessian("exact", every=3)
    opt = GradNormSmoothNewton([w], hessian=lazy)
    f = lambda: ((w - 1) ** 4).sum() + (w**2).sum()  # noqa: E731
    opt.step(f)
    saved = (lazy.calls, lazy.cached.clone(), w.detach().clone(), opt.state_dict())
    calls = [0]

    def closure():
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("trial point failed")
        return f()

    with pytest.raises(RuntimeError, match="trial point failed"):
        opt.step(closure)
    assert lazy.calls == saved[0] and torch.equal(lazy.cached, saved[1])
    assert torch.equal(w.detach(), saved[2])
    assert opt.state_dict()["state"] == saved[3]["state"]
