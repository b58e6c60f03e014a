"""Tests of the SSO optimizer: the inner loop, oracle counts, checkpoints, bad inputs and the
conformance suite."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from optforge.optim.sso import SSO, TargetSurrogateLoss, target_gradient
from optforge.testing import ConvergenceSettings, check_optimizer

D64 = torch.float64


def _lsq_step(opt, problem):
    return opt.step(forward=problem.residuals, target_loss=lambda z: 0.5 * (z.float() ** 2).sum())


def _factory(params, **kw):
    return SSO(params, **{"target_lr": 1.0, "inner_steps": 5, "loss_reduction": "sum", **kw})


def test_check_optimizer():
    check_optimizer(
        _factory,
        step_fn=_lsq_step,
        quadratic=ConvergenceSettings(steps=30, tol=1e-4),
        rosenbrock=ConvergenceSettings(
            steps=100, tol=1e-2, hyperparams={"lr": 1.0, "target_lr": 1.0, "inner_steps": 20}
        ),
        # A joint Armijo search and the joint early-stopping test couple the groups; with fixed
        # inner steps the (separable) surrogate makes two groups exactly two optimizers.
        deterministic_hyperparams={"inner": "sgd", "lr": 0.1, "inner_tol": 0.0},
        group_hyperparams={"lr": 0.05},
        bad_hyperparams={
            "lr": -1.0,
            "target_lr": 0.0,
            "inner_steps": 0,
            "schedule": "cosine",
            "inner": "adam",
            "armijo_c": 1.5,
            "armijo_beta": 0.0,
            "expand": 0.5,
            "loss_reduction": "none",
            "adaptive": "rmsprop",
            "max_backtracks": 0,
        },
        nonfinite_raises=True,
    )


def test_one_fixed_inner_step_equals_torch_sgd(mlp):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 3, (64,), generator=gen)
    a, b = mlp(seed=5), mlp(seed=5)
    sso = SSO(a.parameters(), lr=0.3, target_lr=2.0, inner_steps=1, inner="sgd")
    sgd = torch.optim.SGD(b.parameters(), lr=0.3)
    for t in range(10):
        xb, yb = x[8 * (t % 8) : 8 * (t % 8) + 8], y[8 * (t % 8) : 8 * (t % 8) + 8]
        loss_sso = sso.step(
            forward=lambda xb=xb: a(xb), target_loss=lambda z, yb=yb: F.cross_entropy(z, yb)
        )
        sgd.zero_grad()
        loss_sgd = F.cross_entropy(b(xb), yb)
        loss_sgd.backward()
        sgd.step()
        assert float(loss_sso) == pytest.approx(float(loss_sgd.detach()), abs=1e-12)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_model_projects_the_target_sgd_step(reduction):
    gen = torch.Generator().manual_seed(6)
    b, d, eta = 6, 10, 0.8
    x = torch.randn(b, d, generator=gen, dtype=D64)
    y = torch.randint(0, 2, (b,), generator=gen).to(D64)
    w = (0.3 * torch.randn(d, generator=gen, dtype=D64)).requires_grad_(True)
    w0 = w.detach().clone()

    def target_loss(z):
        return F.binary_cross_entropy_with_logits(z, y, reduction=reduction)

    opt = SSO(
        [w], lr=1.0, target_lr=eta, inner_steps=3000, inner_tol=1e-13, loss_reduction=reduction
    )
    z_t = (x @ w0).detach()
    g_hat = target_gradient(target_loss, z_t)
    per_example = g_hat * (b if reduction == "mean" else 1)
    opt.step(forward=lambda: x @ w, target_loss=target_loss)
    torch.testing.assert_close(x @ w.detach(), z_t - eta * per_example, rtol=0, atol=1e-6)
    expected = w0 - eta * torch.linalg.pinv(x) @ per_example
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-6)


def test_full_batch_mm_is_monotone_and_inner_steps_never_increase_surrogate(mlp):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(100, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 2, (100, 1), generator=gen).to(D64)
    model = mlp(d_out=1, seed=8)
    opt = SSO(model.parameters(), lr=10.0, target_lr=4.0, inner_steps=10, expand=1.5)

    def target_loss(z):
        return F.binary_cross_entropy_with_logits(z, y)

    values = []
    for _ in range(50):
        values.append(float(opt.step(forward=lambda: model(x), target_loss=target_loss)))
        trace = opt.state[next(model.parameters())]["surrogate_trace"]
        assert len(trace) >= 2
        assert all(b <= a for a, b in itertools.pairwise(trace))
    with torch.no_grad():
        values.append(float(target_loss(model(x))))
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))
    assert values[-1] < 0.9 * values[0]


@pytest.mark.parametrize("m", [1, 7])
def test_oracle_called_once_per_step(m, mlp):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(32, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 3, (32,), generator=gen)
    model = mlp()
    # lr=100 forces backtracking: the oracle must still be called once per step.
    opt = SSO(model.parameters(), lr=100.0, target_lr=2.0, inner_steps=m)
    calls = []

    def target_loss(z):
        calls.append(1)
        return F.cross_entropy(z, y)

    for _ in range(5):
        opt.step(forward=lambda: model(x), target_loss=target_loss)
    counters = opt.counters
    assert len(calls) == 5 and counters["oracle_calls"] == 5
    assert counters["backtracks"] > 0
    # every forward is the snapshot, an accepted trial or a rejected trial (no extra passes)
    assert counters["forward_evals"] == 5 + counters["inner_steps"] + counters["backtracks"]
    assert opt.cost(oracle_cost=100.0, forward_cost=1.0) == 500.0 + counters["forward_evals"]


def test_forward_count_is_exact_without_failed_searches(mlp):
    model = mlp()
    x = torch.randn(32, 5, dtype=D64)
    y = torch.randint(0, 3, (32,))
    opt = SSO(model.parameters(), lr=1.0, target_lr=1.0, inner_steps=4, inner_tol=0.0)
    opt.step(forward=lambda: model(x), target_loss=lambda z: F.cross_entropy(z, y))
    c = opt.counters
    assert c["inner_steps"] == 4
    assert c["forward_evals"] == 1 + c["inner_steps"] + c["backtracks"]


@pytest.mark.parametrize("options", [{"target_line_search": True}, {"adaptive": "adagrad_norm"}])
def test_state_dict_round_trip_continues_identically(options, mlp):
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(48, 5, generator=gen, dtype=D64)
    y = torch.randint(0, 3, (48,), generator=gen)
    a, b = mlp(seed=1), mlp(seed=2)
    opt_a = SSO(a.parameters(), inner_steps=3, **options)

    def run(model, opt, steps, offset):
        for t in range(offset, offset + steps):
            xb, yb = x[(t % 6) * 8 : (t % 6) * 8 + 8], y[(t % 6) * 8 : (t % 6) * 8 + 8]
            opt.step(
                forward=lambda xb=xb: model(xb), target_loss=lambda z, yb=yb: F.cross_entropy(z, yb)
            )

    run(a, opt_a, 4, 0)
    b.load_state_dict(a.state_dict())
    opt_b = SSO(b.parameters(), inner_steps=3, **options)
    opt_b.load_state_dict(opt_a.state_dict())
    run(a, opt_a, 4, 4)
    run(b, opt_b, 4, 4)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt_a.counters == opt_b.counters


def test_bad_inputs_raise_clear_errors(mlp):
    model = mlp()
    x = torch.randn(8, 5, dtype=D64)
    y = torch.randint(0, 3, (8,))
    opt = SSO(model.parameters())
    loss = lambda z: F.cross_entropy(z, y)  # noqa: E731
    with pytest.raises(TypeError, match="closure must return a pair"):
        opt.step(lambda: F.cross_entropy(model(x), y))
    with pytest.raises(ValueError, match="target_loss must return a scalar"):
        opt.step(forward=lambda: model(x), target_loss=lambda z: (z**2).sum(1))
    with pytest.raises(ValueError, match="no gradient path"):
        opt.step(forward=lambda: model(x).detach(), target_loss=loss)
    with pytest.raises(ValueError, match="exactly one of target_loss and target_grad"):
        opt.step(forward=lambda: model(x))
    with pytest.raises(ValueError, match="shape"):
        opt.step(forward=lambda: model(x), target_grad=torch.zeros(8, 4, dtype=D64))
    bad = torch.zeros(8, 3, dtype=D64)
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        opt.step(forward=lambda: model(x), target_grad=bad)
    with pytest.raises(ValueError, match="inner_steps"):
        SSO(model.parameters(), inner_steps=0)
    with pytest.raises(ValueError, match="target_lr"):
        SSO(model.parameters(), target_lr=-1.0)
    with pytest.raises(ValueError, match="target_line_search=True needs target_loss"):
        SSO(model.parameters(), target_line_search=True).step(
            forward=lambda: model(x), target_grad=torch.zeros(8, 3, dtype=D64)
        )
    with pytest.raises(ValueError, match="same in every param group"):
        SSO([{"params": [model[0].weight]}, {"params": [model[2].weight], "target_lr": 3.0}])


def test_model_output_shape_must_match_targets(mlp):
    model = mlp()
    x = torch.randn(8, 5, dtype=D64)
    y = torch.randint(0, 3, (8,))
    calls = []

    def forward():  # a model whose output changes shape after the snapshot
        calls.append(1)
        return model(x) if len(calls) == 1 else model(x)[:, :2]

    opt = SSO(model.parameters())
    with pytest.raises(ValueError, match="must match the targets"):
        opt.step(forward=forward, target_loss=lambda z: F.cross_entropy(z, y))
    surrogate = TargetSurrogateLoss(torch.zeros(8, 3), torch.zeros(8, 3), eta=1.0)
    with pytest.raises(ValueError, match="shape"):
        surrogate(torch.zeros(8, 2))
    with pytest.raises(ValueError, match="eta"):
        TargetSurrogateLoss(torch.zeros(8, 3), torch.zeros(8, 3), eta=0.0)


# -- issue 24: add_param_group validates first; a raising step changes nothing ---------------
def test_invalid_added_group_does_not_stay(mlp):
    model = mlp()
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = SSO(first, lr=1.0)
    for bad in ({"lr": -1.0}, {"target_lr": 0.0}, {"inner_steps": 3}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            opt.add_param_group({"params": rest, **bad})
        assert len(opt.param_groups) == 1
    opt.add_param_group({"params": rest, "lr": 0.5})
    assert len(opt.param_groups) == 2


def _nan_backward_forward(model, x):
    """Finite targets whose backward is NaN (sqrt at 0 has an infinite derivative; times 0)."""

    def forward():
        out = model(x)
        return out + 0.0 * torch.sqrt(out[:, :1] - out[:, :1].detach())

    return forward


@pytest.mark.parametrize("inner", ["sgd", "armijo"])
def test_nan_surrogate_gradient_raises_naming_it_and_changes_nothing(mlp, inner):
    """Before: inner="sgd" wrote NaN into the parameters and blamed the targets; Armijo
    backtracked ~100 times on NaN and silently skipped the step."""
    model = mlp()
    x = torch.randn(16, 5, dtype=D64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    opt = SSO(model.parameters(), lr=0.5, inner=inner, inner_steps=3)
    opt.step(forward=lambda: model(x), target_loss=lambda z: F.cross_entropy(z, y))
    before = [p.detach().clone() for p in model.parameters()]
    counters = opt.counters
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step(
            forward=_nan_backward_forward(model, x), target_loss=lambda z: F.cross_entropy(z, y)
        )
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert opt.counters == counters


def test_nan_target_loss_leaves_counters(mlp):
    model = mlp()
    x = torch.randn(8, 5, dtype=D64)
    opt = SSO(model.parameters(), lr=0.5)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(forward=lambda: model(x), target_loss=lambda z: (z * float("nan")).sum())
    assert len(opt.state) == 0  # no oracle call, no forward pass recorded
    opt.step(forward=lambda: model(x), target_loss=lambda z: (z**2).sum())
    assert opt.counters["oracle_calls"] == 1 and opt.counters["step"] == 1


def test_exception_in_forward_mid_inner_loop_restores_parameters(mlp):
    model = mlp()
    x = torch.randn(8, 5, dtype=D64)
    calls = [0]

    def forward():
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return model(x)

    opt = SSO(model.parameters(), lr=0.1, inner="sgd", inner_steps=5)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(KeyboardInterrupt):
        opt.step(forward=forward, target_loss=lambda z: (z**2).sum())
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert len(opt.state) == 0


def test_armijo_raises_when_every_trial_point_is_non_finite(mlp):
    """Before: every trial NaN meant ~100 silent forward passes and a skipped step."""
    model = mlp()
    x = torch.randn(8, 5, dtype=D64, generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]

    def forward():  # finite at the current parameters only
        moved = any(not torch.equal(p.detach(), s) for p, s in zip(params, start, strict=True))
        out = model(x)
        return out * math.nan if moved else out

    opt = SSO(params, lr=1.0, inner_steps=2, max_backtracks=5)
    with pytest.raises(FloatingPointError, match="every one of 5 Armijo trial points"):
        opt.step(forward=forward, target_loss=lambda z: (z**2).sum())
    assert all(torch.equal(p.detach(), s) for p, s in zip(params, start, strict=True))
    assert len(opt.state) == 0
