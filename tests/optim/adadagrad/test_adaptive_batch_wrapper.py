"""AdaptiveBatch: any optimizer + a controller; shared live containers, the state_dict layout."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from _adadagrad_helpers import _data, _mlp

from optforge.optim import (
    AdAdaGrad,
    AdAdaGradNorm,
    AdaGradNorm,
    AdaptiveBatch,
    AdaptiveBatchSize,
)
from optforge.testing import CHECKS, ConvergenceSettings, check_optimizer


def _train(model, opt, x, y, steps: int, start: int = 0) -> list[int]:
    sizes = []
    for k in range(start, start + steps):
        idx = (torch.arange(opt.batch_size) + 7 * k) % x.shape[0]
        opt.zero_grad()
        opt.backward(model, F.cross_entropy, x[idx], y[idx])
        opt.step()
        sizes.append(opt.batch_size)
    return sizes


def test_adadagrad_is_the_wrapper_around_torch_adagrad() -> None:
    x, y = _data(40)
    kw = {"eta": 1.0, "initial_batch_size": 2, "max_batch_size": 40}
    model, twin = _mlp(), _mlp()
    ours = AdAdaGrad(model.parameters(), lr=0.2, **kw)
    wrapped = AdaptiveBatch(torch.optim.Adagrad(twin.parameters(), lr=0.2), AdaptiveBatchSize(**kw))
    assert isinstance(ours, AdaptiveBatch) and isinstance(ours, torch.optim.Optimizer)
    assert type(ours.base) is torch.optim.Adagrad
    assert type(AdAdaGradNorm([torch.zeros(2, requires_grad=True)]).base) is AdaGradNorm
    sizes = _train(model, ours, x, y, 8)
    assert sizes == _train(twin, wrapped, x, y, 8) and sizes[-1] > 2
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_wraps_any_optimizer_with_its_update_unchanged() -> None:
    x, y = _data(40)
    model, twin = _mlp(), _mlp()
    opt = AdaptiveBatch(
        torch.optim.Adam(model.parameters(), lr=0.01),
        AdaptiveBatchSize(eta=1.0, initial_batch_size=2, max_batch_size=40),
    )
    plain = torch.optim.Adam(twin.parameters(), lr=0.01)
    for k in range(6):
        idx = (torch.arange(opt.batch_size) + 7 * k) % 40
        opt.zero_grad()
        opt.backward(model, F.cross_entropy, x[idx], y[idx])
        opt.step()
        plain.zero_grad()
        F.cross_entropy(twin(x[idx]), y[idx]).backward()
        plain.step()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)  # mean of G_i vs autograd
    assert opt.batch_size > 2 and opt.last_test["tested"]


def test_step_hooks_and_the_profiler_range_work_as_for_any_optimizer() -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    x, y = _data(40)
    model = _mlp()
    opt = AdAdaGrad(model.parameters(), lr=0.1, initial_batch_size=4)
    calls: list[tuple[str, object]] = []

    def step() -> None:
        opt.zero_grad()
        opt.backward(model, F.cross_entropy, x[:4], y[:4])
        opt.step()

    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o.controller.step)))
    post = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o.controller.step)))
    glob = register_optimizer_step_post_hook(
        lambda o, a, k: calls.append(("all", type(o).__name__))
    )
    try:
        step()
    finally:
        glob.remove()
    assert calls == [("pre", 0), ("all", "Adagrad"), ("post", 1), ("all", "AdAdaGrad")]
    pre.remove()
    post.remove()
    step()  # no hook, no profiler: the wrapper is skipped, the step still counts
    assert len(calls) == 4 and opt.controller.step == 2
    with torch.profiler.profile() as prof:
        step()
    names = {e.name for e in prof.events()}
    assert {"Optimizer.step#AdAdaGrad.step", "Optimizer.step#Adagrad.step"} <= names
    assert opt.controller.step == 3


def test_param_groups_and_state_are_the_base_optimizers_and_stay_live() -> None:
    model = _mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = AdaptiveBatch(base, AdaptiveBatchSize(initial_batch_size=2))
    assert opt.param_groups is base.param_groups and opt.state is base.state
    assert opt.defaults is base.defaults
    x, y = _data(8)
    _train(model, opt, x, y, 2)
    saved = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(saved)  # torch replaces base.param_groups / base.state here
    assert opt.param_groups is base.param_groups and opt.state is base.state
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train(model, opt, x, y, 1)
    scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    extra = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 0.3})
    assert len(base.param_groups) == 2 and base.param_groups[1]["params"] == [extra]
    extra.grad = torch.ones(3, dtype=torch.float64)
    opt.zero_grad()
    assert extra.grad is None


def test_state_dict_is_the_base_one_plus_the_controller() -> None:
    model = _mlp()
    opt = AdAdaGradNorm(model.parameters(), eta=1.0, initial_batch_size=2, max_batch_size=24)
    x, y = _data(24)
    _train(model, opt, x, y, 3)
    state = opt.state_dict()
    assert set(state) == {"state", "param_groups", "adaptive_batch"}
    assert state["adaptive_batch"] == opt.controller.state_dict()
    base_state = opt.base.state_dict()
    assert state["param_groups"] == base_state["param_groups"]
    # without "adaptive_batch" (e.g. torch.distributed.checkpoint's helpers) the controller stays
    other = AdAdaGradNorm(_mlp().parameters(), eta=1.0, initial_batch_size=2, max_batch_size=24)
    other.load_state_dict(base_state)
    assert other.batch_size == 2 and other.controller.step == 0
    other.load_state_dict(state)
    assert other.controller.state_dict() == opt.controller.state_dict()


def test_step_passes_the_closure_and_counts_untested_steps() -> None:
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = AdaptiveBatch(torch.optim.SGD([w], lr=0.1), AdaptiveBatchSize(initial_batch_size=2))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 5.0
    assert torch.equal(w.detach(), torch.tensor([0.8, -1.6], dtype=torch.float64))
    assert opt.controller.step == 1 and not opt.last_test["tested"]


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError, match="base"):
        AdaptiveBatch([torch.zeros(2, requires_grad=True)])
    base = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match="controller"):
        AdaptiveBatch(base, {"eta": 1.0})
    assert AdaptiveBatch(base).controller.state_dict() == AdaptiveBatchSize().state_dict()


def test_wrapper_conformance_around_torch_optimizers() -> None:
    for make in (
        lambda params, **kw: torch.optim.Adam(params, **{"lr": 0.1, **kw}),
        lambda params, **kw: torch.optim.SGD(params, **{"lr": 0.05, "momentum": 0.9, **kw}),
    ):
        check_optimizer(
            lambda params, make=make, **kw: AdaptiveBatch(make(params, **kw)),
            quadratic=ConvergenceSettings(steps=500, tol=1e-3),
            strict_messages=False,  # torch's own messages ("Invalid learning rate")
            # add_param_group goes to the torch base, which validates only in __init__
            checks=[name for name in CHECKS if name != "add_param_group"],
        )


def test_convenience_signatures_are_unchanged() -> None:
    controller = [
        ("test", "norm"),
        ("eta", 0.1),
        ("theta", 0.1),
        ("nu", 0.1),
        ("initial_batch_size", 8),
        ("max_batch_size", None),
        ("test_interval", 1),
        ("coord_reduce", "max"),
        ("q", 0.9),
        ("process_group", None),
        ("maximize", False),
    ]
    expected = {
        AdAdaGrad: [
            ("params", inspect.Parameter.empty),
            ("lr", 1e-2),
            ("lr_decay", 0.0),
            ("weight_decay", 0.0),
            ("initial_accumulator_value", 0.0),
            ("eps", 1e-10),
            *controller,
            ("foreach", None),
            ("method", "auto"),  # added with the ghost-norm statistics (keyword-only)
        ],
        AdAdaGradNorm: [
            ("params", inspect.Parameter.empty),
            ("lr", 1.0),
            ("initial_accumulator_value", 1e-2),
            ("eps", 1e-10),
            ("weight_decay", 0.0),
            ("granularity", "global"),
            *controller,
            ("method", "auto"),
        ],
    }
    for cls, params in expected.items():
        signature = inspect.signature(cls)
        assert [(p.name, p.default) for p in signature.parameters.values()] == params
        kinds = [p.kind for p in signature.parameters.values()]
        first_kw = [p.name for p in signature.parameters.values()].index("test")
        assert all(k == inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds[:first_kw])
        assert all(k == inspect.Parameter.KEYWORD_ONLY for k in kinds[first_kw:])
