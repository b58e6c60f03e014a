"""AdaGradNorm: the update against a hand-written reference, accumulator shapes, conformance."""

from __future__ import annotations

import pytest
import torch

from optforge.optim import (
    AdaGradNorm,
)
from optforge.testing import ConvergenceSettings, check_optimizer


def test_adagradnorm_global_matches_a_hand_written_reference() -> None:
    a = torch.linspace(1.0, 10.0, 6, dtype=torch.float64)
    c = torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(6, dtype=torch.float64, requires_grad=True)  # second tensor, same group
    opt = AdaGradNorm([x, y], lr=0.7, initial_accumulator_value=0.05, eps=1e-10)
    xr, yr, v2 = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), 0.05
    for _ in range(10):
        opt.zero_grad()
        (0.5 * (a * (x - c) ** 2).sum() + 0.5 * ((y - 1) ** 2).sum()).backward()
        opt.step()
        gx, gy = a * (xr - c), yr - 1
        v2 += float(gx @ gx + gy @ gy)
        xr, yr = xr - 0.7 * gx / (v2**0.5 + 1e-10), yr - 0.7 * gy / (v2**0.5 + 1e-10)
    torch.testing.assert_close(x.detach(), xr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y.detach(), yr, rtol=1e-12, atol=1e-14)


def test_adagradnorm_row_and_layer_accumulators() -> None:
    w = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.ones(3, dtype=torch.float64, requires_grad=True)
    for granularity, shapes in (("row", [(3, 1), (3,)]), ("layer", [(), ()])):
        opt = AdaGradNorm([w, bias], granularity=granularity, initial_accumulator_value=0.0)
        w.grad = torch.arange(12, dtype=torch.float64).view(3, 4)
        bias.grad = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        opt.step()
        assert [tuple(opt.state[p]["sum"].shape) for p in (w, bias)] == shapes
        if granularity == "row":
            torch.testing.assert_close(opt.state[w]["sum"].flatten(), w.grad.pow(2).sum(1))


def test_adagradnorm_conformance() -> None:
    for granularity in ("global", "layer", "row"):
        check_optimizer(
            lambda params, granularity=granularity, **kw: AdaGradNorm(
                params, granularity=granularity, **kw
            ),
            quadratic=ConvergenceSettings(steps=500, tol=1e-3),
            # "layer" equals "global" on the one-tensor Rosenbrock problem: run it once
            rosenbrock=None
            if granularity == "layer"
            else ConvergenceSettings(steps=10000, tol=1e-2, hyperparams={"lr": 1.0}),
            bad_hyperparams={
                "lr": -1.0,
                "eps": -1.0,
                "weight_decay": -0.1,
                "initial_accumulator_value": -1.0,
                "granularity": "bogus",
            },
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [("lr", -1.0), ("lr", float("nan")), ("eps", -1.0), ("granularity", "bogus")],
)
def test_add_param_group_validates_before_appending(name, value) -> None:
    opt = AdaGradNorm([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], name: value})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("granularity", ["global", "layer", "row"])
def test_tensor_lr_matches_float_lr_under_a_scheduler(granularity):
    torch.manual_seed(0)
    pa = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))]
    pb = [torch.nn.Parameter(p.detach().clone()) for p in pa]
    oa = AdaGradNorm(pa, lr=0.5, granularity=granularity)
    ob = AdaGradNorm(pb, lr=torch.tensor(0.5), granularity=granularity)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=1, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=1, gamma=0.5)
    for k in range(3):
        for a, b in zip(pa, pb, strict=True):
            a.grad = torch.sin(a.detach() + k)
            b.grad = torch.sin(b.detach() + k)
        oa.step(), ob.step(), sa.step(), sb.step()
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lr"):
        AdaGradNorm(pb, lr=torch.tensor([0.1, 0.2]))
