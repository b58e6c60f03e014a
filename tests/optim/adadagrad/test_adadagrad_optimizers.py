"""AdAdaGrad / AdAdaGrad-Norm: backward, conformance, the Adagrad update, checkpoints, ramp-up."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _adadagrad_helpers import _data, _mlp
from torch import nn

from optforge.data import AdaptiveBatchSampler
from optforge.optim import (
    AdAdaGrad,
    AdAdaGradNorm,
)
from optforge.testing import ConvergenceSettings, check_optimizer


def test_backward_writes_the_minibatch_gradient() -> None:
    model, twin = _mlp(), _mlp()
    x, y = _data()
    opt = AdAdaGrad(model.parameters(), lr=0.1, initial_batch_size=2, eta=0.5)
    loss = opt.backward(model, F.cross_entropy, x, y)
    F.cross_entropy(twin(x), y).backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(F.cross_entropy(twin(x), y).item(), rel=1e-10)
    opt.step()
    assert opt.last_test["tested"] and opt.batch_size >= 2


def test_adadagrad_optimizers_conformance() -> None:
    check_optimizer(
        lambda params, **kw: AdAdaGrad(params, **{"lr": 0.3, **kw}),
        quadratic=ConvergenceSettings(steps=500, tol=1e-3),
        bad_hyperparams={"lr": -1.0, "eta": 0.0, "initial_batch_size": 1, "eps": -1.0},
    )
    check_optimizer(
        AdAdaGradNorm,
        quadratic=ConvergenceSettings(steps=500, tol=1e-3),
        bad_hyperparams={"lr": -1.0, "eta": -1.0, "max_batch_size": 1},
    )


def test_adadagrad_update_is_torch_adagrad() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ours = AdAdaGrad([x], lr=0.2, initial_accumulator_value=0.1)
    theirs = torch.optim.Adagrad([x2], lr=0.2, initial_accumulator_value=0.1)
    for _ in range(5):
        for p, opt in ((x, ours), (x2, theirs)):
            opt.zero_grad()
            (p**4).sum().backward()
            opt.step()
    assert torch.equal(x, x2)


def test_checkpoint_resumes_optimizer_controller_and_sampler_exactly() -> None:
    x_all, y_all = _data(60, seed=3)

    def make():
        model = _mlp()
        opt = AdAdaGradNorm(
            model.parameters(), lr=0.5, eta=0.8, initial_batch_size=2, max_batch_size=60
        )
        sampler = AdaptiveBatchSampler(60, opt.batch_size, seed=7, infinite=True)
        return model, opt, sampler

    def train(model, opt, sampler, steps):
        it = iter(sampler)
        for _ in range(steps):
            idx = next(it)
            opt.zero_grad()
            opt.backward(model, F.cross_entropy, x_all[idx], y_all[idx])
            opt.step()
            sampler.set_batch_size(opt.batch_size)

    model, opt, sampler = make()
    train(model, opt, sampler, 6)
    saved = {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "opt": copy.deepcopy(opt.state_dict()),
        "sampler": sampler.state_dict(),
    }
    train(model, opt, sampler, 6)
    model2, opt2, sampler2 = make()
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sampler2.load_state_dict(saved["sampler"])
    train(model2, opt2, sampler2, 6)
    assert opt.batch_size == opt2.batch_size > 2
    assert sampler.state_dict() == sampler2.state_dict()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_batch_size_ramps_on_a_learnable_problem() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=gen)
    y = (x @ torch.randn(5, 3, generator=gen)).argmax(1)
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = AdAdaGrad(model.parameters(), lr=0.3, eta=1.0, initial_batch_size=2, max_batch_size=400)
    sampler = AdaptiveBatchSampler(400, opt.batch_size, seed=0, infinite=True)
    sizes, it = [], iter(sampler)
    for _ in range(150):
        idx = next(it)
        opt.zero_grad()
        opt.backward(model, F.cross_entropy, x[idx], y[idx])
        opt.step()
        sampler.set_batch_size(opt.batch_size)
        sizes.append(opt.batch_size)
    assert sizes == sorted(sizes) and sizes[-1] >= 20
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.85


@pytest.mark.parametrize("cls", [AdAdaGrad, AdAdaGradNorm])
@pytest.mark.parametrize(("name", "value"), [("lr", -1.0), ("eps", float("nan"))])
def test_add_param_group_validates_before_appending(cls, name, value) -> None:
    opt = cls([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], name: value})
    assert len(opt.param_groups) == 1 and len(opt.base.param_groups) == 1
