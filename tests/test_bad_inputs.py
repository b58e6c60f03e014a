"""Bad inputs across the public entry points of ``optim`` (Langevin, Sven, SSO, GNS, optimistic
SGD, gradient noise, AdaGrad-Norm/AdAdaGrad), ``losses`` (ELR, MECO/NCE), ``unlearning.losses``
and ``rl.advantages`` (issue #24).

Each :class:`Case` makes one bad call: NaN/inf/negative hyper-parameters, wrong shapes, empty
tensors, int and float16 dtypes, NaN in data, meta-device inputs (a device other than the
parameters'), out-of-range labels and indices. A case is **clean** when the call raises
``ValueError``/``TypeError`` (or the optforge exception its docstring documents) whose message
names the argument, and — for calls on a stateful object (an optimizer, a loss with buffers or a
generator) — the object's state, parameters included, is exactly as before. Otherwise it is
**deep** (another exception, or a message that does not name the argument: a raw torch error),
**state** (a clean error after a state change) or **silent** (no error: a wrong result).
``VALID`` lists inputs that must keep working (0 valid inputs refused).

``python tests/test_bad_inputs.py`` prints the figures (tried / clean / deep / silent / state)
per package.
"""

from __future__ import annotations

import copy
import io
import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from optforge.losses import ELRLoss
from optforge.losses.elr import (
    ELRPlusLoss,
    GCELoss,
    ModelEMA,
    SCELoss,
    elr_regularizer,
    mixup_batch,
    sigmoid_rampup,
    update_ema_targets_,
)
from optforge.losses.meco import (
    ENCELoss,
    MECOLoss,
    NCELoss,
    fit_gaussian_noise,
    grid_log_partition,
    meco_momentum_sgd,
)
from optforge.optim import (
    SSO,
    AdAdaGrad,
    AdAdaGradNorm,
    AdaGradNorm,
    GradientNoise,
    GradNormSmoothNewton,
    IterateAverager,
    Langevin,
    NoisyOptimizer,
    OptimisticSGD,
    Sven,
    TargetSurrogateLoss,
    add_gradient_noise_,
    annealed_noise_std,
    gns_minimize,
    langevin_noise_std,
    langevin_recover,
    regularized_newton_step,
    sven_direction,
    target_gradient,
)
from optforge.optim.hessian_approx import SubsampledHessian
from optforge.rl import advantages, optimal_baseline
from optforge.unlearning.losses import (
    GradientAscentLoss,
    InvertedHingeLoss,
    gradient_ascent_loss,
    inverted_hinge_loss,
)

NAN, INF = math.nan, math.inf
F32, F64 = torch.float32, torch.float64


# --------------------------------------------------------------------------------------------
# The case and its classification


@dataclass(frozen=True)
class Case:
    """One call: ``call(setup())`` must raise naming one of ``names`` and change nothing."""

    id: str
    call: Callable[[Any], Any]
    names: tuple[str, ...]
    setup: Callable[[], Any] | None = None
    snapshot: Callable[[Any], Any] | None = None
    allowed: tuple[type[BaseException], ...] = field(default=())

    @property
    def package(self) -> str:
        return self.id.split(":", 1)[0]


def _same(a: Any, b: Any) -> bool:
    """Deep equality; tensors bit for bit (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.is_floating_point():
            return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
        return bool(torch.equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def classify(case: Case) -> tuple[str, str]:
    """``(outcome, detail)``: ``clean``, ``deep``, ``state``, ``silent`` (or ``setup``)."""
    try:
        ctx = case.setup() if case.setup is not None else None
    except Exception as err:  # e.g. an opt-in flag that this version does not have
        return "setup", f"the valid setup failed: {type(err).__name__}: {err}"
    before = case.snapshot(ctx) if case.snapshot is not None else None
    try:
        case.call(ctx)
    except Exception as err:  # classify every exception, the expected ones included
        text = f"{type(err).__name__}: {err}"
        if not isinstance(err, (ValueError, TypeError, *case.allowed)):
            return "deep", text
        if not any(name in str(err) for name in case.names):
            return "deep", f"{text} (does not name {case.names})"
        if case.snapshot is not None and not _same(before, case.snapshot(ctx)):
            return "state", f"{text} (but the state changed)"
        return "clean", text
    return "silent", "no error"


def _roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


# --------------------------------------------------------------------------------------------
# Optimizers: a small problem, one good step, then snapshots


def _param(n: int = 3, dtype: torch.dtype = F32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=gen, dtype=dtype) + 2.0).requires_grad_(True)


def _grad_step(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = 2 * (p.detach() - 1.0)
    opt.step()


def _sven_step(opt: Sven, params: list[torch.Tensor]) -> None:
    (p,) = params
    opt.step(lambda: (p - 1.0) ** 2)


def _sso_step(opt: SSO, params: list[torch.Tensor]) -> None:
    (p,) = params
    opt.step(forward=lambda: 2.0 * p, target_loss=lambda z: ((z - 1.0) ** 2).sum())


def _gns_step(opt: GradNormSmoothNewton, params: list[torch.Tensor]) -> None:
    (p,) = params
    opt.step(lambda: ((p - 1.0) ** 4).sum() + (p**2).sum())


@dataclass(frozen=True)
class _Opt:
    make: Callable[..., torch.optim.Optimizer]
    step: Callable[[torch.optim.Optimizer, list[torch.Tensor]], None]
    dtype: torch.dtype = F32


OPTIMIZERS: dict[str, _Opt] = {
    "Langevin": _Opt(lambda p, **kw: Langevin(p, **{"lr": 0.1, "seed": 0, **kw}), _grad_step),
    "Sven": _Opt(lambda p, **kw: Sven(p, **{"lr": 0.5, "seed": 0, **kw}), _sven_step, F64),
    "SSO": _Opt(lambda p, **kw: SSO(p, **{"lr": 0.5, "inner_steps": 2, **kw}), _sso_step, F64),
    "GradNormSmoothNewton": _Opt(lambda p, **kw: GradNormSmoothNewton(p, **kw), _gns_step, F64),
    "OptimisticSGD": _Opt(lambda p, **kw: OptimisticSGD(p, **{"lr": 0.1, **kw}), _grad_step),
    "NoisyOptimizer": _Opt(
        lambda p, **kw: NoisyOptimizer(torch.optim.SGD(p, lr=0.1), **{"seed": 0, **kw}),
        _grad_step,
    ),
    "AdaGradNorm": _Opt(lambda p, **kw: AdaGradNorm(p, **kw), _grad_step),
    "AdAdaGrad": _Opt(lambda p, **kw: AdAdaGrad(p, **kw), _grad_step),
    "AdAdaGradNorm": _Opt(lambda p, **kw: AdAdaGradNorm(p, **kw), _grad_step),
}


def _opt_setup(name: str, size: int = 3, **kw: Any) -> Callable[[], tuple[Any, list[torch.Tensor]]]:
    spec = OPTIMIZERS[name]

    def setup() -> tuple[Any, list[torch.Tensor]]:
        params = [_param(size, dtype=spec.dtype)]
        opt = spec.make(params, **kw)
        spec.step(opt, params)
        return opt, params

    return setup


def _opt_snapshot(ctx: tuple[Any, list[torch.Tensor]]) -> Any:
    opt, params = ctx
    return (
        [p.detach().clone() for p in params],
        _roundtrip(opt.state_dict()),
        len(opt.param_groups),
    )


# Bad constructor hyper-parameters: {optimizer: {argument: [bad values]}}.
BAD_HYPERPARAMS: dict[str, dict[str, list[Any]]] = {
    "Langevin": {
        "lr": [NAN, INF, -1.0, 0.0, "0.1"],
        "beta": [NAN, 0.0, -1.0, "1"],
        "radius": [NAN, INF, 0.0, -1.0],
        "sphere": ["nope", 1],
        "retraction": ["qr"],
        "seed": ["abc", 1.5, True],
        "generator": ["gen"],
    },
    "Sven": {
        "lr": [NAN, -1.0, INF],
        "k": [0, -3, 2.5],
        "rtol": [0.0, 1.0, NAN],
        "tol": [-1.0, NAN],
        "kappa": [0.0, NAN],
        "svd": ["qr"],
        "oversample": [-1],
        "power_iters": [-1, 1.5],
        "param_fraction": [0.0, 1.5, NAN],
        "microbatch_size": [0],
        "rmsprop": ["adam"],
        "rms_alpha": [1.0, -0.1],
        "rms_eps": [0.0],
        "momentum": [1.0, -0.1, NAN],
        "chunk_size": [0],
        "solver_dtype": [torch.int64, "float64"],
        "seed": ["abc", 1.5],
    },
    "SSO": {
        "lr": [NAN, -1.0],
        "target_lr": [0.0, NAN, INF],
        "inner_steps": [0, 2.5],
        "schedule": ["cosine"],
        "target_line_search": ["yes"],
        "ls_c": [0.0, 1.0],
        "ls_beta": [0.0, 1.0],
        "ls_expand": [0.5],
        "adaptive": ["rmsprop"],
        "inner": ["adam"],
        "armijo_c": [1.5],
        "armijo_beta": [0.0],
        "expand": [0.5, NAN],
        "inner_tol": [-1.0, NAN],
        "max_backtracks": [0],
        "loss_reduction": ["none"],
    },
    "GradNormSmoothNewton": {
        "gamma0": [0.0, NAN, INF],
        "gamma_min": [-1.0],
        "lambda_eps": [-1.0, NAN],
        "lambda_min": [-1.0],
        "max_search": [0],
        "acceptance": ["x"],
        "solver": ["qr"],
        "cg_tol": [0.0],
        "cg_maxiter": [0],
        "max_dense_dim": [0],
        "on_exhausted": ["x"],
        "gtol": [-1.0, NAN],
        "lr": [0.1],
        "hessian": ["bogus"],
        "metric": [torch.eye(2, dtype=F64), torch.full((3, 3), NAN, dtype=F64)],
    },
    "OptimisticSGD": {"lr": [NAN, -1.0, INF], "optimism": [NAN, -1.0]},
    "NoisyOptimizer": {
        "eta": [NAN, -1.0],
        "gamma": [-1.0, NAN],
        "max_grad_norm": [-1.0, NAN],
        "clip": ["x"],
        "seed": ["abc"],
        "schedule": [5],
    },
    "AdaGradNorm": {
        "lr": [-1.0, NAN],
        "eps": [-1.0],
        "weight_decay": [-1.0],
        "initial_accumulator_value": [-1.0, NAN],
        "granularity": ["x"],
    },
    "AdAdaGrad": {
        "lr": [-1.0, NAN],
        "lr_decay": [-1.0],
        "weight_decay": [-1.0],
        "eps": [-1.0],
        "eta": [0.0, -1.0],
        "initial_batch_size": [0],
    },
    "AdAdaGradNorm": {"lr": [-1.0, NAN], "eps": [-1.0], "eta": [-1.0]},
}


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return repr(value)


def _ctor_cases() -> list[Case]:
    cases = []
    for opt_name, table in BAD_HYPERPARAMS.items():
        spec = OPTIMIZERS[opt_name]
        for arg, values in table.items():
            for value in values:
                cases.append(
                    Case(
                        f"optim:{opt_name}({arg}={_short(value)})",
                        lambda _, s=spec, a=arg, v=value: s.make([_param(dtype=s.dtype)], **{a: v}),
                        (arg,),
                    )
                )
    # a spherical group needs a non-zero vector; complex parameters are documented
    cases.append(
        Case(
            "optim:Langevin(sphere='group', zero vector)",
            lambda _: Langevin([torch.zeros(3, requires_grad=True)], sphere="group"),
            ("params",),
        )
    )
    cases.append(
        Case(
            "optim:Langevin(complex params)",
            lambda _: Langevin([torch.zeros(3, dtype=torch.complex64, requires_grad=True)]),
            ("complex",),
            allowed=(NotImplementedError,),
        )
    )
    return cases


# add_param_group with a bad group: {optimizer: [(group keys, names)]}
BAD_GROUPS: dict[str, list[tuple[dict[str, Any], tuple[str, ...]]]] = {
    "Langevin": [
        ({"lr": NAN}, ("lr",)),
        ({"lr": -1.0}, ("lr",)),
        ({"beta": 0.0}, ("beta",)),
        ({"sphere": "nope"}, ("sphere",)),
        ({"radius": -1.0}, ("radius",)),
    ],
    "Sven": [({"lr": -1.0}, ("lr",)), ({"lr": NAN}, ("lr",)), ({"k": 2}, ("k",))],
    "SSO": [({"lr": -1.0}, ("lr",)), ({"target_lr": 0.0}, ("target_lr",))],
    "GradNormSmoothNewton": [({"gamma0": 2.0}, ("gamma0",)), ({"lr": 0.1}, ("lr",))],
    "OptimisticSGD": [({"lr": NAN}, ("lr",)), ({"optimism": -1.0}, ("optimism",))],
    "AdaGradNorm": [({"lr": -1.0}, ("lr",)), ({"eps": NAN}, ("eps",))],
    "AdAdaGrad": [({"lr": -1.0}, ("lr",)), ({"eps": -1.0}, ("eps",))],
    "AdAdaGradNorm": [({"lr": NAN}, ("lr",)), ({"granularity": "x"}, ("granularity",))],
}


def _add_group_cases() -> list[Case]:
    cases = []
    for opt_name, groups in BAD_GROUPS.items():
        dtype = OPTIMIZERS[opt_name].dtype
        for group, names in groups:
            cases.append(
                Case(
                    f"optim:{opt_name}.add_param_group({group})",
                    lambda ctx, g=group, d=dtype: ctx[0].add_param_group(
                        {"params": [_param(dtype=d, seed=1)], **g}
                    ),
                    names,
                    setup=_opt_setup(opt_name),
                    snapshot=_opt_snapshot,
                )
            )
    return cases


def _set_grad(value: torch.Tensor) -> Callable[[Any], None]:
    def call(ctx: tuple[Any, list[torch.Tensor]]) -> None:
        opt, (p,) = ctx
        p.grad = value.to(p.dtype)
        opt.step()

    return call


def _nan_vec() -> torch.Tensor:
    return torch.tensor([1.0, NAN, 0.0])


def _step_cases() -> list[Case]:
    fpe = (FloatingPointError,)

    def opt_case(name, opt_name, call, names, allowed=(), **kw):
        return Case(
            f"optim:{opt_name}.step({name})",
            call,
            names,
            setup=_opt_setup(opt_name, **kw),
            snapshot=_opt_snapshot,
            allowed=allowed,
        )

    def sven(closure_of):  # closure_of(p) -> closure
        return lambda ctx: ctx[0].step(closure_of(ctx[1][0]))

    mlp = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    x, y = torch.randn(6, 2, dtype=F64), torch.randn(6, 1, dtype=F64)
    mse = nn.MSELoss(reduction="none")

    def sven_model(label, names, inputs, targets, loss_fn=mse, model=mlp, **kw):
        def setup():
            opt = Sven(mlp.parameters(), lr=0.1, seed=0, **kw)
            opt.step(model=mlp, loss_fn=mse, inputs=x, targets=y)
            return opt, list(mlp.parameters())

        return Case(
            f"optim:Sven.step(model path: {label})",
            lambda ctx: ctx[0].step(model=model, loss_fn=loss_fn, inputs=inputs, targets=targets),
            names,
            setup=setup,
            snapshot=_opt_snapshot,
        )

    x_nan = x.clone()
    x_nan[0, 0] = NAN

    def sso(forward_of, **kw):  # forward_of(p) -> dict of step keywords
        return lambda ctx: ctx[0].step(**forward_of(ctx[1][0]), **kw)

    sq = lambda z: (z**2).sum()  # noqa: E731
    cases = [
        opt_case("NaN grad", "Langevin", _set_grad(_nan_vec()), ("gradient",)),
        opt_case("inf grad", "Langevin", _set_grad(torch.full((3,), INF)), ("gradient",)),
        opt_case(
            "sparse grad",
            "Langevin",
            _set_grad(torch.ones(3).to_sparse()),
            ("sparse",),
            allowed=(NotImplementedError,),
        ),
        opt_case(
            "NaN losses",
            "Sven",
            sven(lambda p: lambda: (p - 1) ** 2 * NAN),
            ("losses",),
            allowed=fpe,
        ),
        opt_case("scalar loss", "Sven", sven(lambda p: lambda: ((p - 1) ** 2).sum()), ("scalar",)),
        opt_case("empty output", "Sven", sven(lambda p: lambda: (p - 1)[:0]), ("empty",)),
        opt_case(
            "int output",
            "Sven",
            sven(lambda p: lambda: torch.ones(3, dtype=torch.long)),
            ("floating",),
        ),
        opt_case("non-tensor output", "Sven", sven(lambda p: lambda: [1.0, 2.0]), ("closure",)),
        opt_case("closure not callable", "Sven", lambda ctx: ctx[0].step(5), ("closure",)),
        opt_case("no arguments", "Sven", lambda ctx: ctx[0].step(), ("closure",)),
        opt_case(
            "odd batch",
            "Sven",
            sven(lambda p: lambda: ((p - 1) ** 2)[:3]),
            ("microbatch_size",),
            microbatch_size=2,
            size=4,
        ),
        sven_model("inputs NaN", ("inputs",), x_nan, y),
        sven_model("inputs meta", ("inputs",), x.to("meta"), y),
        sven_model("targets meta", ("targets",), x, y.to("meta")),
        sven_model("targets length", ("targets",), x, y[:4]),
        sven_model("empty batch", ("inputs",), x[:0], y[:0]),
        sven_model("mean loss", ("loss_fn",), x, y, loss_fn=nn.MSELoss()),
        sven_model("loss_fn 5", ("loss_fn",), x, y, loss_fn=5),
        sven_model("model lambda", ("model",), x, y, model=lambda t: t),
        opt_case(
            "NaN targets",
            "SSO",
            sso(lambda p: {"forward": lambda: p * NAN, "target_loss": sq}),
            ("targets",),
            allowed=fpe,
        ),
        opt_case(
            "NaN target loss",
            "SSO",
            sso(lambda p: {"forward": lambda: 2 * p, "target_loss": lambda z: sq(z) * NAN}),
            ("target_loss",),
            allowed=fpe,
        ),
        opt_case(
            "NaN target_grad",
            "SSO",
            sso(
                lambda p: {
                    "forward": lambda: 2 * p,
                    "target_grad": torch.full((3,), NAN, dtype=F64),
                }
            ),
            ("target gradient",),
            allowed=fpe,
        ),
        opt_case(
            "target_grad shape",
            "SSO",
            sso(lambda p: {"forward": lambda: 2 * p, "target_grad": torch.ones(4)}),
            ("target_grad",),
        ),
        opt_case(
            "target_grad meta",
            "SSO",
            sso(lambda p: {"forward": lambda: 2 * p, "target_grad": torch.ones(3, device="meta")}),
            ("target_grad",),
        ),
        opt_case(
            "forward not callable",
            "SSO",
            sso(lambda p: {"forward": 2 * p, "target_loss": sq}),
            ("forward",),
        ),
        opt_case(
            "loss and grad",
            "SSO",
            sso(
                lambda p: {
                    "forward": lambda: 2 * p,
                    "target_loss": sq,
                    "target_grad": torch.ones(3),
                }
            ),
            ("target_loss",),
        ),
        opt_case(
            "detached forward",
            "SSO",
            sso(lambda p: {"forward": lambda: 2 * p.detach(), "target_loss": sq}),
            ("forward()",),
        ),
        opt_case(
            "vector target loss",
            "SSO",
            sso(lambda p: {"forward": lambda: 2 * p, "target_loss": lambda z: z}),
            ("target_loss",),
        ),
        opt_case(
            "NaN surrogate gradient",
            "SSO",
            sso(
                lambda p: {
                    "forward": lambda: 2 * p + 0.0 * torch.sqrt(p - p.detach()),
                    "target_loss": sq,
                }
            ),
            ("gradient",),
            allowed=fpe,
        ),
        opt_case("bad closure", "SSO", lambda ctx: ctx[0].step(lambda: 5), ("closure",)),
        opt_case("no closure", "GradNormSmoothNewton", lambda ctx: ctx[0].step(), ("closure",)),
        opt_case(
            "NaN loss",
            "GradNormSmoothNewton",
            lambda ctx: ctx[0].step(lambda: ctx[1][0].sum() * NAN),
            ("loss",),
        ),
        opt_case(
            "vector loss",
            "GradNormSmoothNewton",
            lambda ctx: ctx[0].step(lambda: ctx[1][0] * 2),
            ("closure",),
        ),
        opt_case(
            "NaN gradient",
            "GradNormSmoothNewton",
            lambda ctx: ctx[0].step(
                lambda: (
                    (ctx[1][0] ** 2).sum() + 0.0 * torch.sqrt(ctx[1][0][0] - ctx[1][0][0].detach())
                )
            ),
            ("gradient",),
        ),
        opt_case(
            "NaN grad (check_finite)",
            "OptimisticSGD",
            _set_grad(_nan_vec()),
            ("gradient",),
            allowed=fpe,
            check_finite=True,
        ),
        opt_case(
            "NaN grad (check_finite)",
            "NoisyOptimizer",
            _set_grad(_nan_vec()),
            ("gradient",),
            allowed=fpe,
            check_finite=True,
        ),
        opt_case(
            "NaN grad (clipping)",
            "NoisyOptimizer",
            _set_grad(_nan_vec()),
            ("gradients",),
            allowed=(RuntimeError,),
            max_grad_norm=1.0,
            clip="after_noise",
        ),
    ]
    return cases


def _function_cases() -> list[Case]:
    M, R = torch.randn(4, 3, dtype=F64), torch.randn(4, dtype=F64)
    M_nan = M.clone()
    M_nan[1, 1] = NAN
    H, g = torch.eye(3, dtype=F64), torch.ones(3, dtype=F64)
    quad = lambda x: ((x - 1.0) ** 2).sum()  # noqa: E731
    z, G = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    cases = [
        ("sven_direction(M NaN)", lambda _: sven_direction(M_nan, R), ("M",)),
        ("sven_direction(R NaN)", lambda _: sven_direction(M, R * NAN), ("R",)),
        ("sven_direction(M 1-D)", lambda _: sven_direction(M[0], R), ("M",)),
        ("sven_direction(R shape)", lambda _: sven_direction(M, R[:3]), ("R",)),
        ("sven_direction(M int)", lambda _: sven_direction(M.long(), R), ("M",)),
        ("sven_direction(M float16)", lambda _: sven_direction(M.half(), R), ("M",)),
        ("sven_direction(M meta)", lambda _: sven_direction(M.to("meta"), R), ("M",)),
        ("sven_direction(R meta)", lambda _: sven_direction(M, R.to("meta")), ("R",)),
        ("sven_direction(empty)", lambda _: sven_direction(M[:0], R[:0]), ("M",)),
        ("sven_direction(k=0)", lambda _: sven_direction(M, R, k=0), ("k",)),
        ("sven_direction(rtol=0)", lambda _: sven_direction(M, R, rtol=0.0), ("rtol",)),
        ("sven_direction(method)", lambda _: sven_direction(M, R, method="qr"), ("method",)),
        (
            "sven_direction(generator)",
            lambda _: sven_direction(M, R, method="randomized", generator="g"),
            ("generator",),
        ),
        (
            "regularized_newton_step(lam NaN)",
            lambda _: regularized_newton_step(H, g, NAN),
            ("lam",),
        ),
        (
            "regularized_newton_step(lam -1)",
            lambda _: regularized_newton_step(H, g, -1.0),
            ("lam",),
        ),
        (
            "regularized_newton_step(grad 2-D)",
            lambda _: regularized_newton_step(H, H, 1.0),
            ("grad",),
        ),
        (
            "regularized_newton_step(H shape)",
            lambda _: regularized_newton_step(H[:2], g, 1.0),
            ("hessian",),
        ),
        (
            "regularized_newton_step(H NaN)",
            lambda _: regularized_newton_step(H * NAN, g, 1.0),
            ("hessian",),
        ),
        (
            "regularized_newton_step(grad NaN)",
            lambda _: regularized_newton_step(H, g * NAN, 1.0),
            ("grad",),
        ),
        (
            "regularized_newton_step(grad int)",
            lambda _: regularized_newton_step(H, g.long(), 1.0),
            ("grad",),
        ),
        (
            "regularized_newton_step(H meta)",
            lambda _: regularized_newton_step(H.to("meta"), g, 1.0),
            ("hessian",),
        ),
        (
            "regularized_newton_step(solver)",
            lambda _: regularized_newton_step(H, g, 1.0, solver="qr"),
            ("solver",),
        ),
        (
            "regularized_newton_step(metric)",
            lambda _: regularized_newton_step(H, g, 1.0, metric=torch.eye(2, dtype=F64)),
            ("metric",),
        ),
        (
            "regularized_newton_step(H str)",
            lambda _: regularized_newton_step("H", g, 1.0),
            ("hessian",),
        ),
        ("gns_minimize(fun)", lambda _: gns_minimize(5, g), ("fun",)),
        ("gns_minimize(x0 NaN)", lambda _: gns_minimize(quad, g * NAN), ("x0",)),
        ("gns_minimize(x0 int)", lambda _: gns_minimize(quad, g.long()), ("x0",)),
        ("gns_minimize(x0 2-D)", lambda _: gns_minimize(quad, H), ("x0",)),
        ("gns_minimize(x0 meta)", lambda _: gns_minimize(quad, g.to("meta")), ("x0",)),
        ("gns_minimize(x0 float16)", lambda _: gns_minimize(quad, g.half()), ("x0",)),
        ("gns_minimize(maxiter)", lambda _: gns_minimize(quad, g, maxiter=-1), ("maxiter",)),
        ("gns_minimize(gtol)", lambda _: gns_minimize(quad, g, gtol=-1.0), ("gtol",)),
        ("gns_minimize(ftol alone)", lambda _: gns_minimize(quad, g, ftol=1e-3), ("ftol",)),
        ("gns_minimize(hessian)", lambda _: gns_minimize(quad, g, hessian="bogus"), ("hessian",)),
        (
            "gns_minimize(NaN gradient)",
            lambda _: gns_minimize(lambda x: quad(x) + 0.0 * torch.sqrt(x[0] - 1.0), g),
            ("gradient",),
        ),
        ("gns_minimize(vector fun)", lambda _: gns_minimize(lambda x: x * 2, g), ("fun",)),
        ("gns_minimize(NaN fun)", lambda _: gns_minimize(lambda x: quad(x) * NAN, g), ("fun",)),
        ("TargetSurrogateLoss(eta=0)", lambda _: TargetSurrogateLoss(z, G, 0.0), ("eta",)),
        ("TargetSurrogateLoss(eta NaN)", lambda _: TargetSurrogateLoss(z, G, NAN), ("eta",)),
        (
            "TargetSurrogateLoss(reduction)",
            lambda _: TargetSurrogateLoss(z, G, 1.0, reduction="none"),
            ("reduction",),
        ),
        (
            "TargetSurrogateLoss(shape)",
            lambda _: TargetSurrogateLoss(z, G[:3], 1.0),
            ("target_grad",),
        ),
        (
            "TargetSurrogateLoss(G NaN)",
            lambda _: TargetSurrogateLoss(z, G * NAN, 1.0),
            ("target_grad",),
        ),
        (
            "TargetSurrogateLoss(G meta)",
            lambda _: TargetSurrogateLoss(z, G.to("meta"), 1.0),
            ("target_grad",),
        ),
        (
            "TargetSurrogateLoss(z int)",
            lambda _: TargetSurrogateLoss(z.long(), G, 1.0),
            ("targets_t",),
        ),
        (
            "TargetSurrogateLoss(z empty)",
            lambda _: TargetSurrogateLoss(z[:0], G[:0], 1.0),
            ("targets_t",),
        ),
        (
            "TargetSurrogateLoss.forward(shape)",
            lambda _: TargetSurrogateLoss(z, G, 1.0)(z[:2]),
            ("shape",),
        ),
        (
            "TargetSurrogateLoss.forward(meta)",
            lambda _: TargetSurrogateLoss(z, G, 1.0)(z.to("meta")),
            ("targets",),
        ),
        (
            "target_gradient(vector loss)",
            lambda _: target_gradient(lambda t: t * 2, z),
            ("target_loss",),
        ),
        ("target_gradient(not callable)", lambda _: target_gradient(5, z), ("target_loss",)),
        (
            "target_gradient(meta)",
            lambda _: target_gradient(lambda t: t.sum(), z.to("meta")),
            ("targets",),
        ),
        (
            "target_gradient(int)",
            lambda _: target_gradient(lambda t: t.sum(), z.long()),
            ("targets",),
        ),
        ("langevin_noise_std(lr -1)", lambda _: langevin_noise_std(-1.0, 1.0), ("lr",)),
        ("langevin_noise_std(beta 0)", lambda _: langevin_noise_std(0.1, 0.0), ("beta",)),
        ("langevin_noise_std(beta NaN)", lambda _: langevin_noise_std(0.1, NAN), ("beta",)),
        ("annealed_noise_std(t -1)", lambda _: annealed_noise_std(-1, 0.1), ("t",)),
        ("annealed_noise_std(t 1.5)", lambda _: annealed_noise_std(1.5, 0.1), ("t",)),
        ("annealed_noise_std(eta -1)", lambda _: annealed_noise_std(0, -1.0), ("eta",)),
        ("annealed_noise_std(gamma NaN)", lambda _: annealed_noise_std(0, 0.1, NAN), ("gamma",)),
        (
            "add_gradient_noise_(std NaN)",
            lambda _: add_gradient_noise_([torch.zeros(3)], NAN),
            ("std",),
        ),
        (
            "add_gradient_noise_(std -1)",
            lambda _: add_gradient_noise_([torch.zeros(3)], -1.0),
            ("std",),
        ),
        (
            "add_gradient_noise_(one tensor)",
            lambda _: add_gradient_noise_(torch.zeros(3), 0.1),
            ("grads",),
        ),
        (
            "add_gradient_noise_(int)",
            lambda _: add_gradient_noise_([torch.zeros(3, dtype=torch.long)], 0.1),
            ("grads",),
        ),
        ("GradientNoise(eta)", lambda _: GradientNoise([torch.zeros(1)], eta=-1.0), ("eta",)),
        ("GradientNoise(gamma)", lambda _: GradientNoise([torch.zeros(1)], gamma=NAN), ("gamma",)),
        (
            "GradientNoise(start_step)",
            lambda _: GradientNoise([torch.zeros(1)], start_step=-1),
            ("start_step",),
        ),
        ("GradientNoise(seed)", lambda _: GradientNoise([torch.zeros(1)], seed="abc"), ("seed",)),
        (
            "GradientNoise(schedule)",
            lambda _: GradientNoise([torch.zeros(1)], schedule=5),
            ("schedule",),
        ),
        ("GradientNoise(params)", lambda _: GradientNoise(torch.zeros(3)), ("params",)),
        ("NoisyOptimizer(base)", lambda _: NoisyOptimizer("sgd"), ("base",)),
        (
            "SubsampledHessian(seed)",
            lambda _: SubsampledHessian(lambda x, i: x.sum() * i, 4, seed="abc"),
            ("seed",),
        ),
        (
            "IterateAverager(start_step)",
            lambda _: IterateAverager([_param()], start_step=-1),
            ("start_step",),
        ),
        ("IterateAverager(empty)", lambda _: IterateAverager([]), ("params_or_module",)),
        ("langevin_recover(steps)", lambda _: langevin_recover(_Planted(), steps=0), ("steps",)),
        ("langevin_recover(seed)", lambda _: langevin_recover(_Planted(), seed="abc"), ("seed",)),
        (
            "langevin_recover(init shape)",
            lambda _: langevin_recover(_Planted(), init=torch.ones(2, dtype=F64)),
            ("init",),
        ),
        (
            "langevin_recover(init NaN)",
            lambda _: langevin_recover(_Planted(), init=torch.full((4,), NAN, dtype=F64)),
            ("init",),
        ),
        (
            "langevin_recover(burn_in)",
            lambda _: langevin_recover(_Planted(), burn_in=1.5),
            ("burn_in",),
        ),
        ("langevin_recover(problem)", lambda _: langevin_recover(object()), ("problem",)),
    ]
    return [Case(f"optim:{name}", call, names) for name, call, names in cases]


class _Planted:
    theta_star = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        return -theta[0] * self.theta_star


# --------------------------------------------------------------------------------------------
# Losses


def _elr_setup() -> ELRLoss:
    loss = ELRLoss(6, 3)
    loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]))
    return loss


def _module_snapshot(module: nn.Module) -> Any:
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in module.state_dict().items()
    }


def _elr_cases() -> list[Case]:
    z, y, idx = torch.randn(2, 3), torch.tensor([0, 2]), torch.tensor([3, 4])
    z_nan = z.clone()
    z_nan[0, 1] = NAN
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    fwd = [
        ("logits NaN", z_nan, y, idx, ("logits",)),
        ("logits inf", z * INF, y, idx, ("logits",)),
        ("logits 1-D", z[0], y, idx, ("logits",)),
        ("logits C=4", torch.randn(2, 4), y, idx, ("num_classes",)),
        ("empty batch", z[:0], y[:0], idx[:0], ("empty",)),
        ("logits int", z.long(), y, idx, ("logits",)),
        ("logits meta", z.to("meta"), y, idx, ("logits",)),
        ("target out of range", z, torch.tensor([0, 3]), idx, ("target",)),
        ("target negative", z, torch.tensor([-1, 0]), idx, ("target",)),
        ("target float ids", z, y.float(), idx, ("target",)),
        ("target length", z, y[:1], idx, ("target",)),
        ("soft NaN", z, soft * NAN, idx, ("target",)),
        ("soft negative", z, soft - 0.5, idx, ("target",)),
        ("soft shape", z, soft[:, :2], idx, ("target",)),
        ("soft int", z, soft.long(), idx, ("target",)),
        ("target meta", z, y.to("meta"), idx, ("target",)),
        ("index None", z, y, None, ("index",)),
        ("index float", z, y, idx.float(), ("index",)),
        ("index out of range", z, y, torch.tensor([5, 6]), ("index", "num_examples")),
        ("index negative", z, y, torch.tensor([-1, 0]), ("index", "num_examples")),
        ("index length", z, y, idx[:1], ("index",)),
        ("index meta", z, y, idx.to("meta"), ("index",)),
    ]
    cases = [
        Case(
            f"losses:ELRLoss.forward({name})",
            lambda loss, a=a, b=b, c=c: loss(a, b, c),
            names,
            setup=_elr_setup,
            snapshot=_module_snapshot,
        )
        for name, a, b, c, names in fwd
    ]
    ctor = [
        ("num_examples", 0),
        ("num_examples", -1),
        ("num_examples", 2.5),
        ("num_examples", "10"),
        ("num_classes", 1),
        ("lam", NAN),
        ("lam", -1.0),
        ("beta", 1.0),
        ("beta", NAN),
        ("clamp_eps", 0.0),
        ("clamp_eps", 0.5),
        ("reduction", "avg"),
        ("label_smoothing", 1.5),
        ("label_smoothing", NAN),
        ("ce_weight", torch.ones(2)),
    ]
    for arg, value in ctor:
        kw = {"num_examples": 6, "num_classes": 3, arg: value}
        cases.append(
            Case(f"losses:ELRLoss({arg}={_short(value)})", lambda _, kw=kw: ELRLoss(**kw), (arg,))
        )

    def plus_setup() -> ELRPlusLoss:
        loss = ELRPlusLoss(6, 3)
        loss.update_targets(torch.tensor([0, 1]), torch.randn(2, 3))
        return loss

    plus = [
        (
            "update_targets(index out of range)",
            lambda m: m.update_targets(torch.tensor([0, 9]), torch.randn(2, 3)),
            ("index",),
        ),
        (
            "update_targets(teacher NaN)",
            lambda m: m.update_targets(torch.tensor([0, 1]), torch.full((2, 3), NAN)),
            ("logits",),
        ),
        (
            "update_targets(perm)",
            lambda m: m.update_targets(
                torch.tensor([0, 1]), torch.randn(2, 3), torch.tensor([0, 0]), 0.7
            ),
            ("perm",),
        ),
        (
            "update_targets(m)",
            lambda m: m.update_targets(torch.tensor([0, 1]), torch.randn(2, 3), None, 2.0),
            ("m",),
        ),
        ("forward(soft NaN)", lambda m: m(torch.randn(2, 3), soft * NAN), ("soft_labels",)),
        ("forward(soft negative)", lambda m: m(torch.randn(2, 3), soft - 0.5), ("soft_labels",)),
        ("forward(soft shape)", lambda m: m(torch.randn(2, 3), soft[:1]), ("soft_labels",)),
        ("forward(logits NaN)", lambda m: m(z_nan, soft), ("logits",)),
        ("forward(step -1)", lambda m: m(torch.randn(2, 3), soft, step=-1), ("step",)),
        ("forward(soft meta)", lambda m: m(torch.randn(2, 3), soft.to("meta")), ("soft_labels",)),
    ]
    cases += [
        Case(f"losses:ELRPlusLoss.{name}", call, names, setup=plus_setup, snapshot=_module_snapshot)
        for name, call, names in plus
    ]
    cases.append(
        Case(
            "losses:ELRPlusLoss.forward(before update_targets)",
            lambda _: ELRPlusLoss(6, 3)(torch.randn(2, 3), soft),
            ("update_targets",),
            allowed=(RuntimeError,),
        )
    )
    for cls in (GCELoss, SCELoss):
        n = cls.__name__
        cases += [
            Case(f"losses:{n}.forward(logits NaN)", lambda _, c=cls: c()(z_nan, y), ("logits",)),
            Case(
                f"losses:{n}.forward(target 3)",
                lambda _, c=cls: c()(z, torch.tensor([0, 3])),
                ("target",),
            ),
            Case(
                f"losses:{n}.forward(target float)", lambda _, c=cls: c()(z, y.float()), ("target",)
            ),
            Case(f"losses:{n}.forward(target length)", lambda _, c=cls: c()(z, y[:1]), ("target",)),
            Case(f"losses:{n}.forward(logits 1-D)", lambda _, c=cls: c()(z[0], y), ("logits",)),
            Case(f"losses:{n}.forward(empty)", lambda _, c=cls: c()(z[:0], y[:0]), ("empty",)),
            Case(f"losses:{n}.forward(meta)", lambda _, c=cls: c()(z.to("meta"), y), ("logits",)),
            Case(f"losses:{n}(reduction)", lambda _, c=cls: c(reduction="x"), ("reduction",)),
        ]
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(4, 2), torch.eye(4)
    cases += [
        Case("losses:GCELoss(q=0)", lambda _: GCELoss(q=0.0), ("q",)),
        Case("losses:GCELoss(q NaN)", lambda _: GCELoss(q=NAN), ("q",)),
        Case("losses:SCELoss(alpha)", lambda _: SCELoss(alpha=-1.0), ("alpha",)),
        Case("losses:SCELoss(log_clamp 0)", lambda _: SCELoss(log_clamp=0.0), ("log_clamp",)),
        Case("losses:SCELoss(log_clamp NaN)", lambda _: SCELoss(log_clamp=NAN), ("log_clamp",)),
        Case("losses:mixup_batch(alpha)", lambda _: mixup_batch(xs, ys, -1.0, gen), ("alpha",)),
        Case(
            "losses:mixup_batch(generator)",
            lambda _: mixup_batch(xs, ys, 1.0, None),
            ("generator",),
        ),
        Case(
            "losses:mixup_batch(rows)", lambda _: mixup_batch(xs, ys[:3], 1.0, gen), ("y_onehot",)
        ),
        Case(
            "losses:mixup_batch(meta)", lambda _: mixup_batch(xs.to("meta"), ys, 1.0, gen), ("x",)
        ),
        Case("losses:mixup_batch(empty)", lambda _: mixup_batch(xs[:0], ys[:0], 1.0, gen), ("x",)),
        Case(
            "losses:update_ema_targets_(index)",
            lambda _: update_ema_targets_(
                torch.zeros(4, 3), torch.tensor([0, 4]), torch.rand(2, 3), 0.5
            ),
            ("index",),
        ),
        Case(
            "losses:update_ema_targets_(probs shape)",
            lambda _: update_ema_targets_(
                torch.zeros(4, 3), torch.tensor([0, 1]), torch.rand(3, 3), 0.5
            ),
            ("probs",),
        ),
        Case(
            "losses:update_ema_targets_(beta)",
            lambda _: update_ema_targets_(
                torch.zeros(4, 3), torch.tensor([0, 1]), torch.rand(2, 3), 1.0
            ),
            ("beta",),
        ),
        Case(
            "losses:update_ema_targets_(buffer 1-D)",
            lambda _: update_ema_targets_(
                torch.zeros(4), torch.tensor([0, 1]), torch.rand(2, 3), 0.5
            ),
            ("buffer",),
        ),
        Case(
            "losses:elr_regularizer(shapes)",
            lambda _: elr_regularizer(torch.rand(2, 3), torch.rand(2, 4)),
            ("targets",),
        ),
        Case("losses:ModelEMA(decay)", lambda _: ModelEMA(nn.Linear(2, 2), decay=1.0), ("decay",)),
        Case(
            "losses:ModelEMA(ramp_steps)",
            lambda _: ModelEMA(nn.Linear(2, 2), ramp_steps=-1),
            ("ramp_steps",),
        ),
        Case("losses:ModelEMA(mode)", lambda _: ModelEMA(nn.Linear(2, 2), mode="x"), ("mode",)),
        Case("losses:sigmoid_rampup(length)", lambda _: sigmoid_rampup(1, -1), ("length",)),
        Case("losses:sigmoid_rampup(step NaN)", lambda _: sigmoid_rampup(NAN, 10), ("step",)),
    ]
    return cases


def _std_normal() -> Any:
    base = torch.distributions.Normal(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    return torch.distributions.Independent(base, 1)


class _Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.3], dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x[:, 0] - self.theta) ** 2


def _meco_cases() -> list[Case]:
    x = torch.randn(8, 1, dtype=F64)
    x_nan = x.clone()
    x_nan[0] = NAN
    energy = _Quadratic()
    uniform = torch.full((8,), 1 / 8, dtype=F64)

    def setup(cls):
        def make():
            loss = cls(_std_normal(), seed=0)
            loss(energy, x)
            return loss

        return make

    def snapshot(loss):
        return _module_snapshot(loss), copy.deepcopy(loss.get_extra_state())

    forward = [
        ("x_data NaN", lambda m: m(energy, x_nan), ("x_data",)),
        ("x_data empty", lambda m: m(energy, x[:0]), ("x_data",)),
        ("x_data 0-D", lambda m: m(energy, x[0, 0]), ("x_data",)),
        ("x_data int", lambda m: m(energy, x.long()), ("x_data",)),
        ("x_data meta", lambda m: m(energy, x.to("meta")), ("x_data",)),
        ("z_noise event shape", lambda m: m(energy, x, torch.randn(8, 2, dtype=F64)), ("z_noise",)),
        ("z_noise meta", lambda m: m(energy, x, x.to("meta")), ("z_noise",)),
        ("z_noise NaN", lambda m: m(energy, x, x_nan), ("z_noise",)),
        ("x_weights sum 2", lambda m: m(energy, x, x_weights=2 * uniform), ("x_weights",)),
        ("x_weights negative", lambda m: m(energy, x, x_weights=uniform - 0.25), ("x_weights",)),
        ("x_weights NaN", lambda m: m(energy, x, x_weights=uniform * NAN), ("x_weights",)),
        ("x_weights shape", lambda m: m(energy, x, x_weights=uniform[:4] * 2), ("x_weights",)),
        ("x_weights meta", lambda m: m(energy, x, x_weights=uniform.to("meta")), ("x_weights",)),
        (
            "x_weights int",
            lambda m: m(energy, x, x_weights=torch.ones(8, dtype=torch.long)),
            ("x_weights",),
        ),
        ("z_weights sum 0.5", lambda m: m(energy, x, z_weights=uniform / 2), ("z_weights",)),
        ("energy shape", lambda m: m(lambda t: t.repeat(1, 2), x), ("energy",)),
        ("energy NaN", lambda m: m(lambda t: t[:, 0] * NAN, x), ("energy",)),
        ("energy not callable", lambda m: m(5, x), ("energy",)),
    ]
    cases = []
    for cls in (MECOLoss, NCELoss):
        cases += [
            Case(
                f"losses:{cls.__name__}.forward({name})",
                call,
                names,
                setup=setup(cls),
                snapshot=snapshot,
            )
            for name, call, names in forward
        ]
    ctor = [
        (MECOLoss, "noise", None),
        (MECOLoss, "gamma", 0.0),
        (MECOLoss, "gamma", 1.5),
        (MECOLoss, "gamma", NAN),
        (MECOLoss, "estimator", "x"),
        (MECOLoss, "num_noise", 0),
        (MECOLoss, "energy_sign", "x"),
        (MECOLoss, "seed", "abc"),
        (NCELoss, "nu", 0.0),
        (NCELoss, "nu", NAN),
        (NCELoss, "init_log_normalizer", NAN),
        (NCELoss, "seed", "abc"),
        (NCELoss, "energy_sign", "x"),
        (ENCELoss, "seed", 1.5),
        (NCELoss, "noise", 5),
    ]
    for cls, arg, value in ctor:
        kw = {"noise": _std_normal(), arg: value}
        cases.append(
            Case(f"losses:{cls.__name__}({arg}={value!r})", lambda _, c=cls, kw=kw: c(**kw), (arg,))
        )
    cases += [
        Case(
            "losses:MECOLoss.forward(storm without a module)",
            lambda _: MECOLoss(_std_normal(), estimator="storm")(lambda t: -(t[:, 0] ** 2), x),
            ("energy",),
        ),
        Case("losses:fit_gaussian_noise(1-D)", lambda _: fit_gaussian_noise(x[:, 0]), ("x",)),
        Case("losses:fit_gaussian_noise(one row)", lambda _: fit_gaussian_noise(x[:1]), ("x",)),
        Case("losses:fit_gaussian_noise(NaN)", lambda _: fit_gaussian_noise(x_nan), ("x",)),
        Case("losses:fit_gaussian_noise(int)", lambda _: fit_gaussian_noise(x.long()), ("x",)),
        Case(
            "losses:fit_gaussian_noise(scale)",
            lambda _: fit_gaussian_noise(x, scale=0.0),
            ("scale",),
        ),
        Case(
            "losses:grid_log_partition(m)",
            lambda _: grid_log_partition(energy, (-1, 1), m=0),
            ("m",),
        ),
        Case(
            "losses:grid_log_partition(lims)",
            lambda _: grid_log_partition(energy, (1, -1)),
            ("lims",),
        ),
        Case(
            "losses:grid_log_partition(dim)",
            lambda _: grid_log_partition(energy, (-1, 1), dim=3),
            ("dim",),
        ),
        Case(
            "losses:grid_log_partition(energy_sign)",
            lambda _: grid_log_partition(energy, (-1, 1), energy_sign="x"),
            ("energy_sign",),
        ),
        Case(
            "losses:meco_momentum_sgd(lr)",
            lambda _: meco_momentum_sgd([_param()], lr=-1.0),
            ("lr",),
        ),
        Case(
            "losses:meco_momentum_sgd(lr NaN)",
            lambda _: meco_momentum_sgd([_param()], NAN),
            ("lr",),
        ),
        Case(
            "losses:meco_momentum_sgd(beta 0)",
            lambda _: meco_momentum_sgd([_param()], 0.1, beta=0.0),
            ("beta",),
        ),
        Case(
            "losses:meco_momentum_sgd(beta 1.5)",
            lambda _: meco_momentum_sgd([_param()], 0.1, beta=1.5),
            ("beta",),
        ),
    ]
    return cases


def _unlearning_cases() -> list[Case]:
    z, y = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    z_nan = z.clone()
    z_nan[0, 1, 2] = NAN
    cases = []
    for fn in (inverted_hinge_loss, gradient_ascent_loss):
        n = fn.__name__
        bad = [
            ("vocab 1", z[..., :1], torch.zeros(2, 4, dtype=torch.long), {}, ("vocabulary",)),
            ("logits NaN", z_nan, y, {}, ("logits",)),
            ("logits inf", z * INF, y, {}, ("logits",)),
            ("empty batch", z[:0], y[:0], {}, ("empty",)),
            ("labels float", z, y.float(), {}, ("labels",)),
            ("labels out of range", z, torch.full((2, 4), 7), {}, ("labels",)),
            ("labels negative", z, torch.full((2, 4), -3), {}, ("labels",)),
            ("shape mismatch", z, y[:, :3], {}, ("shape",)),
            ("reduction", z, y, {"reduction": "avg"}, ("reduction",)),
            ("labels meta", z, y.to("meta"), {}, ("labels",)),
            ("logits meta", z.to("meta"), y, {}, ("logits",)),
            ("logits int", z.long(), y, {}, ("logits",)),
            ("shift with T=1", z[:, :1], y[:, :1], {}, ("labels",)),
            ("ignore_index str", z, y, {"ignore_index": "x"}, ("ignore_index",)),
            ("all masked, mean", z, torch.full((2, 4), -100), {}, ("ignore_index",)),
        ]
        if fn is inverted_hinge_loss:
            bad += [
                ("margin NaN", z, y, {"margin": NAN}, ("margin",)),
                ("margin -1", z, y, {"margin": -1.0}, ("margin",)),
            ]
        cases += [
            Case(f"unlearning:{n}({name})", lambda _, a=a, b=b, kw=kw, f=fn: f(a, b, **kw), names)
            for name, a, b, kw, names in bad
        ]
    cases += [
        Case(
            "unlearning:InvertedHingeLoss(reduction)",
            lambda _: InvertedHingeLoss(reduction="x"),
            ("reduction",),
        ),
        Case(
            "unlearning:InvertedHingeLoss(margin)",
            lambda _: InvertedHingeLoss(margin=NAN),
            ("margin",),
        ),
        Case(
            "unlearning:InvertedHingeLoss(ignore_index)",
            lambda _: InvertedHingeLoss(ignore_index=1.5),
            ("ignore_index",),
        ),
        Case(
            "unlearning:GradientAscentLoss(reduction)",
            lambda _: GradientAscentLoss(reduction="x"),
            ("reduction",),
        ),
        Case(
            "unlearning:InvertedHingeLoss.forward(vocab 1)",
            lambda _: InvertedHingeLoss()(z[..., :1], torch.zeros(2, 4, dtype=torch.long)),
            ("vocabulary",),
        ),
    ]
    return cases


def _rl_cases() -> list[Case]:
    r, w = torch.rand(8, dtype=F64), torch.rand(8, dtype=F64)
    bad = [
        (
            "eps -1, zero weights",
            r,
            2,
            {"weights": torch.zeros(8, dtype=F64), "eps": -1.0},
            ("eps",),
        ),
        ("eps NaN", r, 2, {"weights": w, "eps": NAN}, ("eps",)),
        ("eps inf", r, 2, {"weights": w, "eps": INF}, ("eps",)),
        ("group_size 0", r, 0, {"weights": w}, ("group_size",)),
        ("group_size 2.5", r, 2.5, {"weights": w}, ("group_size",)),
        ("group_size 1, rloo", r, 1, {"baseline": "rloo"}, ("group_size",)),
        ("baseline", r, 2, {"baseline": "x"}, ("baseline",)),
        ("scale_rewards", r, 2, {"scale_rewards": "x", "weights": w}, ("scale_rewards",)),
        ("rewards NaN", r * NAN, 2, {"weights": w}, ("rewards",)),
        ("rewards inf", r * INF, 2, {"weights": w}, ("rewards",)),
        ("rewards int", r.long(), 2, {"baseline": "rloo"}, ("rewards",)),
        ("rewards 3-D", r.reshape(2, 2, 2), 2, {"baseline": "rloo"}, ("rewards",)),
        ("rewards length", r[:7], 2, {"baseline": "rloo"}, ("rewards",)),
        ("rewards empty", r[:0], 2, {"baseline": "rloo"}, ("rewards",)),
        ("rewards meta", r.to("meta"), 2, {"baseline": "rloo"}, ("rewards",)),
        ("weights missing", r, 2, {}, ("weights",)),
        ("weights shape", r, 2, {"weights": w[:4]}, ("weights",)),
        ("weights NaN", r, 2, {"weights": w * NAN}, ("weights",)),
        ("weights negative", r, 2, {"weights": -w}, ("weights",)),
        ("weights meta", r, 2, {"weights": w.to("meta")}, ("weights",)),
        ("weights int", r, 2, {"weights": torch.ones(8, dtype=torch.long)}, ("weights",)),
    ]
    cases = [
        Case(f"rl:advantages({name})", lambda _, a=a, g=g, kw=kw: advantages(a, g, **kw), names)
        for name, a, g, kw, names in bad
    ]
    cases += [
        Case(
            "rl:optimal_baseline(eps -1)", lambda _: optimal_baseline(r, w, 2, eps=-1.0), ("eps",)
        ),
        Case(
            "rl:optimal_baseline(weights negative)",
            lambda _: optimal_baseline(r, -w, 2),
            ("weights",),
        ),
        Case(
            "rl:optimal_baseline(group_size 1)",
            lambda _: optimal_baseline(r, w, 1),
            ("group_size",),
        ),
        Case(
            "rl:optimal_baseline(weights meta)",
            lambda _: optimal_baseline(r, w.to("meta"), 2),
            ("weights",),
        ),
    ]
    return cases


CASES: list[Case] = (
    _ctor_cases()
    + _add_group_cases()
    + _step_cases()
    + _function_cases()
    + _elr_cases()
    + _meco_cases()
    + _unlearning_cases()
    + _rl_cases()
)


# --------------------------------------------------------------------------------------------
# Inputs that must keep working (no valid input refused)


def _valid_calls() -> list[tuple[str, Callable[[], Any]]]:
    z, y = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    w = torch.rand(1000, dtype=F32)
    x = torch.randn(1000, 1, dtype=F32)
    noise32 = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1
    )
    masked_nan = z.clone()
    masked_nan[0, 0] = NAN  # predicts labels[0, 1], which is ignored
    labels_masked = y.clone()
    labels_masked[0, 1] = -100
    return [
        (
            "ELRLoss float16 logits",
            lambda: ELRLoss(4, 3)(
                torch.randn(4, 3).half(), torch.tensor([0, 1, 2, 0]), torch.arange(4)
            ),
        ),
        (
            "ELRLoss soft labels",
            lambda: ELRLoss(4, 3)(
                torch.randn(2, 3),
                torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]]),
                torch.tensor([0, 1]),
            ),
        ),
        ("OptimisticSGD lr=0", lambda: OptimisticSGD([_param()], lr=0.0)),
        ("Langevin beta=inf", lambda: Langevin([_param()], lr=0.1, beta=INF)),
        ("Langevin seed numpy int", lambda: Langevin([_param()], seed=np.int64(3))),
        ("Sven lr=0", lambda: Sven([_param()], lr=0.0)),
        (
            "GNS add_param_group",
            lambda: GradNormSmoothNewton([_param(dtype=F64)]).add_param_group(
                {"params": [_param(dtype=F64, seed=1)]}
            ),
        ),
        (
            "IHL all masked, sum",
            lambda: inverted_hinge_loss(z, torch.full((2, 4), -100), reduction="sum"),
        ),
        (
            "IHL NaN logit at an ignored position",
            lambda: inverted_hinge_loss(masked_nan, labels_masked),
        ),
        ("IHL float16 logits", lambda: inverted_hinge_loss(z.half(), y)),
        (
            "advantages eps=0, zero weights",
            lambda: advantages(torch.rand(4), 2, weights=torch.zeros(4), eps=0.0),
        ),
        (
            "MECOLoss float32 weights summing to 1",
            lambda: MECOLoss(noise32, seed=0)(
                lambda t: -(t[:, 0] ** 2), x, x_weights=w / w.sum(), z_weights=w / w.sum()
            ),
        ),
        (
            "NCELoss float32 weights summing to 1",
            lambda: NCELoss(noise32, seed=0)(
                lambda t: -(t[:, 0] ** 2), x, x_weights=w / w.sum(), z_weights=w / w.sum()
            ),
        ),
        (
            "SSO target_grad callable",
            lambda: SSO([p := _param(dtype=F64)]).step(
                forward=lambda: 2 * p, target_grad=lambda t: 2 * t
            ),
        ),
        ("sven_direction float32", lambda: sven_direction(torch.randn(4, 3), torch.randn(4))),
    ]


VALID = _valid_calls()


# --------------------------------------------------------------------------------------------
# The tests


def test_case_ids_are_unique():
    counts = Counter(case.id for case in CASES)
    assert not [i for i, n in counts.items() if n > 1]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_rejected_cleanly(case):
    outcome, detail = classify(case)
    assert outcome == "clean", f"{outcome}: {detail}"


@pytest.mark.parametrize(("name", "call"), VALID, ids=[name for name, _ in VALID])
def test_valid_input_is_accepted(name, call):
    call()


def test_classifier_sees_each_outcome():
    """The matrix can fail: each outcome is produced by a planted call."""
    counter = {"n": 0}

    def bump(_):
        counter["n"] += 1
        raise ValueError("x is bad")

    planted = {
        "clean": Case("t:clean", lambda _: (_ for _ in ()).throw(ValueError("x is bad")), ("x",)),
        "deep": Case("t:deep", lambda _: [][1], ("x",)),
        "silent": Case("t:silent", lambda _: None, ("x",)),
        "state": Case("t:state", bump, ("x",), setup=lambda: None, snapshot=lambda _: counter["n"]),
    }
    assert {name: classify(case)[0] for name, case in planted.items()} == {
        name: name for name in planted
    }
    assert classify(Case("t:vague", lambda _: int("y"), ("x",)))[0] == "deep"


def test_shared_validators():
    from optforge._core import (
        NonFiniteError,
        OutOfRangeError,
        check_device,
        check_floating,
        check_index_range,
        check_seed,
        check_shape,
        check_tensor,
    )

    t = torch.zeros(2, 3)
    assert check_tensor("t", t, shape=(2, None)) is t
    with pytest.raises(ValueError, match="meta"):
        check_tensor("t", t.to("meta"))
    with pytest.raises(ValueError, match="u is on meta"):
        check_device("u", t.to("meta"), "cpu")
    with pytest.raises(TypeError, match="t must be a floating"):
        check_floating("t", t.long())
    with pytest.raises(TypeError, match="float32 or float64"):
        check_floating("t", t.half(), allow_half=False)
    with pytest.raises(ValueError, match=r"t must have shape \(3, \*\)"):
        check_shape("t", t, (3, None))
    with pytest.raises(ValueError, match="empty"):
        check_tensor("t", t[:0])
    with pytest.raises(ValueError, match="non-finite"):
        check_tensor("t", t * NAN)
    with pytest.raises(OutOfRangeError, match=r"idx: every value must lie in \[0, n=2\)"):
        check_index_range("idx", torch.tensor([0, 2]), 0, 2, high_name="n")
    with pytest.raises(IndexError):
        check_index_range("idx", torch.tensor([-1]), 0, 2)
    with pytest.raises(TypeError, match="seed"):
        check_seed("seed", "abc")
    with pytest.raises(ValueError, match="seed"):
        check_seed("seed", 2**70)
    assert check_seed("seed", None) is None and check_seed("seed", 3) == 3
    assert issubclass(NonFiniteError, ValueError) and issubclass(NonFiniteError, FloatingPointError)


# --------------------------------------------------------------------------------------------
# Figures for the closing note: python tests/test_bad_inputs.py


def figures(cases: list[Case] = CASES) -> dict[str, Counter]:
    per_package: dict[str, Counter] = {}
    for case in cases:
        outcome, _ = classify(case)
        per_package.setdefault(case.package, Counter())[outcome] += 1
    return per_package


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows, total = figures(), Counter()
    keys = ("clean", "deep", "silent", "state", "setup")
    print(f"{'package':12s} {'tried':>6s} " + " ".join(f"{k:>6s}" for k in keys))
    for package, counts in sorted(rows.items()):
        total += counts
        tried = sum(counts.values())
        print(f"{package:12s} {tried:6d} " + " ".join(f"{counts[k]:6d}" for k in keys))
    tried = sum(total.values())
    print(f"{'all':12s} {tried:6d} " + " ".join(f"{total[k]:6d}" for k in keys))
    refused = 0
    for name, call in VALID:
        try:
            call()
        except Exception as err:
            refused += 1
            print(f"valid input refused: {name}: {type(err).__name__}: {err}")
    print(f"valid inputs: {len(VALID)} tried, {refused} refused")
    if "-v" in sys.argv:
        for case in CASES:
            outcome, detail = classify(case)
            if outcome != "clean":
                print(f"{outcome:7s} {case.id}: {detail[:160]}")


if __name__ == "__main__":
    main()
