"""Tests of the Sven optimizer: least-squares steps, the per-example Jacobian of the module and
closure paths, RMSProp/momentum, checkpoints, bad inputs and the conformance suite."""

import copy
import io

import pytest
import torch
from torch import nn

from optforge.optim.sven import Sven, sven_direction
from optforge.testing import ConvergenceSettings, check_optimizer

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _linear_problem(n, p, seed=0):
    g = _gen(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    y = torch.randn(n, generator=g, dtype=F64)
    theta = torch.randn(p, generator=g, dtype=F64, requires_grad=True)
    return X, y, theta


def _mlp(seed=0, dtype=F64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _data(n=12, seed=1, dtype=F64):
    g = _gen(seed)
    return torch.randn(n, 2, generator=g, dtype=dtype), torch.randn(n, 3, generator=g, dtype=dtype)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _loop_jacobian(model, loss_fn, x, y, kappa=2.0):
    """Slow reference: one autograd.grad per example of R_a = loss_a ** (kappa / 2)."""
    rows, losses = [], []
    for a in range(x.shape[0]):
        loss = loss_fn(model(x[a : a + 1]), y[a : a + 1]).sum()
        residual = loss ** (kappa / 2)
        grads = torch.autograd.grad(residual, list(model.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
        losses.append(residual.detach())
    return torch.stack(rows), torch.stack(losses)


def test_underparametrised_linear_step_lands_on_lstsq():
    X, y, theta = _linear_problem(200, 10)
    opt = Sven([theta], lr=1.0, k=10, rtol=1e-12, residual_mode=True)
    opt.step(lambda: X @ theta - y)
    expected = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(theta.detach(), expected, atol=1e-8, rtol=0)


def test_overparametrised_linear_step_is_the_minimum_norm_correction():
    X, y, theta = _linear_problem(20, 100)
    theta0 = theta.detach().clone()
    opt = Sven([theta], lr=1.0, rtol=1e-12, residual_mode=True)
    opt.step(lambda: X @ theta - y)
    step = theta.detach() - theta0
    torch.testing.assert_close(step, torch.linalg.pinv(X) @ (y - X @ theta0), atol=1e-10, rtol=0)
    torch.testing.assert_close(
        X @ theta.detach() - y, torch.zeros(20, dtype=F64), atol=1e-10, rtol=0
    )
    null_projector = torch.eye(100, dtype=F64) - torch.linalg.pinv(X) @ X
    assert float((null_projector @ step).abs().max()) < 1e-10


@pytest.mark.parametrize("lr", [0.5, 0.1])
def test_overparametrised_residuals_shrink_by_one_minus_lr_per_step(lr):
    X, y, theta = _linear_problem(20, 100, seed=2)
    opt = Sven([theta], lr=lr, rtol=1e-9, residual_mode=True)
    r0 = float((X @ theta.detach() - y).norm())
    for t in range(1, 11):
        opt.step(lambda: X @ theta - y)
        r_t = float((X @ theta.detach() - y).norm())
        assert r_t == pytest.approx((1 - lr) ** t * r0, rel=1e-6)


def test_optimizer_exposes_svd_info():
    X, y, theta = _linear_problem(20, 100)
    opt = Sven([theta], lr=1.0, k=5, residual_mode=True)
    opt.step(lambda: X @ theta - y)
    info = opt.last_svd_info
    assert info.rank == 5 and info.num_conditions == 20 and info.num_params == 100


@pytest.mark.parametrize("kappa", [1.0, 2.0])
def test_loss_scaling_leaves_the_step_unchanged(kappa):
    x, y = _data()
    loss_fn = nn.MSELoss(reduction="none")
    deltas = []
    for c in (1.0, 37.0):
        model = _mlp()
        start = _flat(model)
        opt = Sven(model.parameters(), lr=0.3, k=8, kappa=kappa)
        opt.step(lambda model=model, c=c: c * loss_fn(model(x), y).sum(1))
        deltas.append(_flat(model) - start)
    torch.testing.assert_close(deltas[0], deltas[1], atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("kappa", [2.0, 1.0, 3.0])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_module_step_matches_a_loop_of_autograd_grad(kappa, chunk_size):
    x, y = _data()
    loss_fn = nn.MSELoss(reduction="none")
    model = _mlp()
    M, R = _loop_jacobian(model, loss_fn, x, y, kappa)
    expected, _ = sven_direction(M, R, k=7)
    start = _flat(model)
    opt = Sven(model.parameters(), lr=1.0, k=7, kappa=kappa, chunk_size=chunk_size)
    mean_loss = opt.step(model=model, loss_fn=loss_fn, inputs=x, targets=y)
    torch.testing.assert_close(start - _flat(model), expected, atol=1e-10, rtol=1e-8)
    with torch.no_grad():
        initial = float(loss_fn(_mlp()(x), y).sum(1).mean())
    assert float(mean_loss) == pytest.approx(initial)


def test_closure_path_equals_module_path():
    x, y = _data()
    loss_fn = nn.MSELoss(reduction="none")
    a, b = _mlp(), _mlp()
    Sven(a.parameters(), k=9).step(model=a, loss_fn=loss_fn, inputs=x, targets=y)
    Sven(b.parameters(), k=9).step(lambda: loss_fn(b(x), y))
    torch.testing.assert_close(_flat(a), _flat(b), atol=1e-12, rtol=0)


def test_residual_mode_module_path_is_gauss_newton():
    g = _gen(15)
    x = torch.randn(40, 5, generator=g, dtype=F64)
    y = torch.randn(40, 2, generator=g, dtype=F64)
    model = nn.Linear(5, 2).to(F64)
    opt = Sven(model.parameters(), lr=1.0, rtol=1e-12, residual_mode=True)
    opt.step(model=model, loss_fn=lambda pred, t: pred - t, inputs=x, targets=y)
    design = torch.cat([x, torch.ones(40, 1, dtype=F64)], 1)
    solution = torch.linalg.lstsq(design, y).solution
    torch.testing.assert_close(model.weight.detach(), solution[:5].T, atol=1e-9, rtol=0)
    torch.testing.assert_close(model.bias.detach(), solution[5], atol=1e-9, rtol=0)
    assert opt.last_svd_info.num_conditions == 80


def test_parameters_update_in_place_and_frozen_ones_stay():
    x, y = _data()
    model = _mlp()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    ptr = model[2].weight.data_ptr()
    opt = Sven(model.parameters(), k=4)
    opt.step(model=model, loss_fn=nn.MSELoss(reduction="none"), inputs=x, targets=y)
    assert torch.equal(model[0].weight, frozen)
    assert model[2].weight.data_ptr() == ptr
    assert opt.last_svd_info.num_params == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )


def test_batchnorm_buffers_untouched_in_eval_mode():
    x, y = _data()
    model = nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    model[1].running_mean.fill_(0.3)
    model.eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    opt = Sven(model.parameters(), k=4)
    opt.step(model=model, loss_fn=nn.MSELoss(reduction="none"), inputs=x, targets=y)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k


@pytest.mark.parametrize("mask_by_block", [False, True])
def test_param_fraction_leaves_unmasked_coordinates_bit_identical(mask_by_block):
    x, y = _data()
    model = _mlp()
    start = _flat(model)
    opt = Sven(model.parameters(), param_fraction=0.3, mask_by_block=mask_by_block, seed=0)
    opt.step(model=model, loss_fn=nn.MSELoss(reduction="none"), inputs=x, targets=y)
    changed = int((_flat(model) != start).sum())
    n_cols = opt.last_svd_info.num_params
    assert 0 < changed <= n_cols < start.numel()
    if not mask_by_block:
        assert n_cols == round(0.3 * start.numel())


def test_microbatching_reduces_rows_and_averages_losses():
    x, y = _data()
    loss_fn = nn.MSELoss(reduction="none")
    model, ref_model = _mlp(), _mlp()
    opt = Sven(model.parameters(), k=3, microbatch_size=4)
    opt.step(model=model, loss_fn=loss_fn, inputs=x, targets=y)
    assert opt.last_svd_info.num_conditions == 3
    # reference: group-mean losses through the closure path
    ref = Sven(ref_model.parameters(), k=3)
    ref.step(lambda: loss_fn(ref_model(x), y).sum(1).reshape(3, 4).mean(1))
    torch.testing.assert_close(_flat(model), _flat(ref_model), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="microbatch_size"):
        Sven(_mlp().parameters(), microbatch_size=5).step(
            model=model, loss_fn=loss_fn, inputs=x, targets=y
        )


def test_rmsprop_pre_is_a_diagonal_change_of_variables():
    X, y, theta = _linear_problem(10, 30)
    theta0 = theta.detach().clone()
    opt = Sven([theta], lr=1.0, k=4, rmsprop="pre", rms_alpha=0.9, residual_mode=True)
    opt.step(lambda: X @ theta - y)
    R = X @ theta0 - y
    D = 1.0 / ((0.1 * X.mean(0) ** 2).sqrt() + 1e-8)
    expected = D * sven_direction(X * D, R, k=4)[0]
    torch.testing.assert_close(theta0 - theta.detach(), expected, atol=1e-10, rtol=1e-8)


def test_rmsprop_post_and_momentum_first_steps():
    X, y, theta = _linear_problem(10, 30)
    theta0 = theta.detach().clone()
    opt = Sven([theta], lr=0.5, rmsprop="post", rms_alpha=0.75, residual_mode=True)
    opt.step(lambda: X @ theta - y)
    d = sven_direction(X, X @ theta0 - y)[0]
    expected = 0.5 * d / ((0.25 * d**2).sqrt() + 1e-8)
    torch.testing.assert_close(theta0 - theta.detach(), expected, atol=1e-10, rtol=1e-8)

    X, y, theta = _linear_problem(10, 30)
    opt = Sven([theta], lr=0.5, momentum=0.9, residual_mode=True)
    d1 = sven_direction(X, X @ theta.detach() - y)[0]
    opt.step(lambda: X @ theta - y)
    theta1 = theta.detach().clone()
    d2 = sven_direction(X, X @ theta1 - y)[0]
    opt.step(lambda: X @ theta - y)
    torch.testing.assert_close(theta1 - theta.detach(), 0.5 * (0.9 * d1 + d2), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "options",
    [
        {"rmsprop": "post", "momentum": 0.5},
        {"rmsprop": "pre", "param_fraction": 0.5, "svd": "randomized", "k": 4},
    ],
)
def test_state_dict_round_trip_continues_identically(options):
    x, y = _data(n=16)
    loss_fn = nn.MSELoss(reduction="none")
    a = _mlp()
    opt_a = Sven(a.parameters(), lr=0.2, seed=3, **options)

    def run(model, opt, n):
        for _ in range(n):
            opt.step(model=model, loss_fn=loss_fn, inputs=x, targets=y)

    run(a, opt_a, 3)
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    b = copy.deepcopy(a)
    opt_b = Sven(b.parameters(), lr=0.2, seed=99, **options)
    opt_b.load_state_dict(torch.load(buffer, weights_only=False))
    run(a, opt_a, 3)
    run(b, opt_b, 3)
    assert torch.equal(_flat(a), _flat(b))


def test_conformance_suite():
    def factory(params, lr=1.0, **kw):
        return Sven(params, lr=lr, residual_mode=True, **kw)

    check_optimizer(
        factory,
        step_fn=lambda opt, problem: opt.step(problem.residuals),
        quadratic=ConvergenceSettings(steps=3, tol=1e-8),
        rosenbrock=ConvergenceSettings(steps=30, tol=1e-6),
        bad_hyperparams={
            "lr": -1.0,
            "k": 0,
            "rtol": 0.0,
            "tol": -1.0,
            "kappa": 0.0,
            "svd": "qr",
            "param_fraction": 0.0,
            "microbatch_size": 0,
            "rmsprop": "adam",
            "momentum": 1.0,
            "path": "fast",
        },
        nonfinite_raises=True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("k", 0), ("k", -3), ("rtol", -0.1), ("rtol", 0.0), ("rtol", 1.0), ("kappa", -1.0)],
)
def test_bad_hyperparameters_are_named(name, value):
    with pytest.raises(ValueError, match=name):
        Sven([torch.zeros(2, requires_grad=True)], **{name: value})
    if name != "kappa":
        with pytest.raises(ValueError, match=name):
            sven_direction(torch.ones(2, 3), torch.ones(2), **{name: value})


def test_scalar_or_wrong_length_losses_are_rejected():
    x, y = _data()
    model = _mlp()
    opt = Sven(model.parameters())
    with pytest.raises(ValueError, match="reduction='none'"):
        opt.step(lambda: nn.functional.mse_loss(model(x), y))
    with pytest.raises(ValueError, match="reduction='none'"):
        opt.step(model=model, loss_fn=nn.MSELoss(), inputs=x, targets=y)
    with pytest.raises(ValueError, match="per-example"):
        opt.step(model=model, loss_fn=lambda p, t: (p - t).pow(2).sum(0), inputs=x, targets=y)
    with pytest.raises(ValueError, match="targets"):
        opt.step(model=model, loss_fn=nn.MSELoss(reduction="none"), inputs=x, targets=y[:5])
    with pytest.raises(ValueError, match="R must have shape"):
        sven_direction(torch.ones(3, 4), torch.ones(2))


def test_nan_losses_raise_with_the_step_number():
    theta = torch.ones(3, requires_grad=True)
    opt = Sven([theta])
    opt.step(lambda: theta**2)
    with pytest.raises(FloatingPointError, match="step 2"):
        opt.step(lambda: theta * torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="M contains non-finite"):
        sven_direction(torch.full((2, 2), float("inf")), torch.ones(2))


def test_negative_losses_with_fractional_kappa_are_rejected():
    theta = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="kappa"):
        Sven([theta], kappa=1.0).step(lambda: theta - 2.0)
    Sven([theta], kappa=2.0).step(lambda: theta - 2.0)  # integer power: fine


def test_zero_jacobian_gives_an_exactly_zero_step():
    theta = torch.randn(4, requires_grad=True)
    before = theta.detach().clone()
    opt = Sven([theta], kappa=1.0)
    opt.step(lambda: torch.ones(5) + 0.0 * theta.sum())
    assert torch.equal(theta.detach(), before)
    assert opt.last_svd_info.rank == 0
    opt.step(lambda: torch.ones(5))  # output that does not depend on the parameters at all
    assert torch.equal(theta.detach(), before)


def test_exactly_fitted_example_with_kappa_one_gives_no_nan():
    theta = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    target = torch.tensor([1.0, 0.0], dtype=F64)
    opt = Sven([theta], lr=1.0, kappa=1.0)
    opt.step(lambda: (theta - target) ** 2)  # first example exactly fitted: zero row
    assert torch.isfinite(theta).all()
    torch.testing.assert_close(theta.detach(), target)  # √loss = |θ − t| is linear: one GN step


def test_groups_may_only_differ_in_lr():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    Sven([{"params": [a]}, {"params": [b], "lr": 0.01}])
    with pytest.raises(ValueError, match="only lr may differ"):
        Sven([{"params": [a]}, {"params": [b], "k": 3}])


def test_group_lr_scales_each_slice():
    X, y, theta = _linear_problem(8, 6)
    t1, t2 = (
        theta.detach()[:3].clone().requires_grad_(),
        theta.detach()[3:].clone().requires_grad_(),
    )
    before = torch.cat([t1, t2]).detach()
    opt = Sven([{"params": [t1]}, {"params": [t2], "lr": 0.25}], lr=1.0, residual_mode=True)
    opt.step(lambda: X @ torch.cat([t1, t2]) - y)
    d = sven_direction(X, X @ before - y)[0]
    torch.testing.assert_close(
        before - torch.cat([t1, t2]).detach(), torch.cat([d[:3], 0.25 * d[3:]])
    )


# -- issue 24: add_param_group validates first; a raising step changes nothing ---------------
def test_invalid_added_group_does_not_stay():
    """Before the fix the group with lr=-1 was appended, then the ValueError raised: the next
    steps climbed (loss 3.54 -> 12.13). Now the optimizer is as if add_param_group was never
    called."""
    model, ref = _mlp(seed=3), _mlp(seed=3)
    x, y = _data()
    loss_fn = nn.MSELoss(reduction="none")
    first, second = list(model.parameters()), list(ref.parameters())
    opt = Sven(first[:2], lr=0.5, seed=0)
    opt_ref = Sven(second[:2], lr=0.5, seed=0)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": first[2:], "lr": -1.0})
    with pytest.raises(ValueError, match="k"):
        opt.add_param_group({"params": first[2:], "k": 3})
    assert len(opt.param_groups) == 1
    for o, m in ((opt, model), (opt_ref, ref)):
        for _ in range(3):
            o.step(model=m, loss_fn=loss_fn, inputs=x, targets=y)
    assert torch.equal(_flat(model), _flat(ref))


def test_first_group_values_are_validated():
    with pytest.raises(ValueError, match="k"):
        Sven([{"params": [torch.zeros(2, requires_grad=True)], "k": 0}])


@pytest.mark.parametrize("rmsprop", [None, "pre"])
def test_a_raising_step_changes_nothing(rmsprop):
    X, y, theta = _linear_problem(8, 3)
    opt = Sven([theta], lr=0.5, rmsprop=rmsprop, momentum=0.5, param_fraction=0.7, seed=0)
    opt.step(lambda: (X @ theta - y) ** 2)
    before = (theta.detach().clone(), copy.deepcopy(opt.state_dict()))
    nan_y = y.clone()
    nan_y[2] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite losses"):
        opt.step(lambda: (X @ theta - nan_y) ** 2)
    assert torch.equal(theta.detach(), before[0])
    after = opt.state_dict()
    assert torch.equal(after["generator_state"], before[1]["generator_state"])
    for key, value in before[1]["state"][0].items():
        assert torch.equal(after["state"][0][key], value), key


def test_a_raising_first_step_creates_no_state():
    _, _, theta = _linear_problem(8, 3)
    opt = Sven([theta], lr=0.5)

    def bad():
        raise KeyError("user error")

    with pytest.raises(KeyError):
        opt.step(bad)
    assert len(opt.state) == 0


def test_empty_closure_output_is_named():
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = Sven([theta])
    with pytest.raises(ValueError, match="closure returned an empty"):
        opt.step(lambda: (theta * 0).sum().reshape(1)[:0])
    with pytest.raises(TypeError, match="floating"):
        opt.step(lambda: torch.ones(3, dtype=torch.long))


def test_seed_and_model_inputs_are_checked():
    with pytest.raises(TypeError, match="seed"):
        Sven([torch.zeros(2, requires_grad=True)], seed="abc")
    model = _mlp()
    x, y = _data()
    opt = Sven(model.parameters())
    loss_fn = nn.MSELoss(reduction="none")
    with pytest.raises(ValueError, match="inputs"):
        opt.step(model=model, loss_fn=loss_fn, inputs=x.to("meta"), targets=y)
    with pytest.raises(ValueError, match="targets"):
        opt.step(model=model, loss_fn=loss_fn, inputs=x, targets=y.to("meta"))
    x_nan = x.clone()
    x_nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs"):
        opt.step(model=model, loss_fn=loss_fn, inputs=x_nan, targets=y)
    assert len(opt.state) == 0
