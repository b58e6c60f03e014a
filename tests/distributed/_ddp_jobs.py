"""The distributed scenarios of ``test_ddp.py``: one function per optimizer, run either on every
rank of a gloo process group (``python _ddp_jobs.py OUT_DIR`` with ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR``/``MASTER_PORT`` set) or in one process on the union batch (the reference the
test compares against). Everything is float64 so "same as one process" means to rounding.

Each rank shards every global batch with ``tensor_split`` (rank ``r`` takes piece ``r``); the
batches themselves come from a generator seeded identically on every rank.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from _spawn import rank_main
from torch import Tensor, nn

N, D_IN, HIDDEN = 32, 5, 6
STEPS = 4


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(D_IN, 1, generator=g, dtype=torch.float64)).squeeze(1)
    return x, y


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)).double()


def batches(size: int = 8, steps: int = STEPS) -> list[Tensor]:
    """Global batch indices, identical on every rank (a shared seeded generator)."""
    g = torch.Generator().manual_seed(7)
    return [torch.randperm(N, generator=g)[:size] for _ in range(steps)]


def shard(t: Tensor) -> Tensor:
    rank, size = world()
    return t.tensor_split(size)[rank]


def gather(t: Tensor) -> Tensor:
    """The union of every rank's shard (rank order), on every rank."""
    _, size = world()
    if size == 1:
        return t
    pieces: list[Any] = [None] * size
    dist.all_gather_object(pieces, t)
    return torch.cat(pieces)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.squeeze(-1) - target).pow(2).mean()


def per_example_mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.squeeze(-1) - target).pow(2)


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def wrap(model: nn.Module, fsdp: bool = False) -> nn.Module:
    """DDP on more than one rank; with ``fsdp``, FSDP2 ``fully_shard`` per layer instead."""
    _, size = world()
    if size == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        return fully_shard(model)
    return nn.parallel.DistributedDataParallel(model)


def full_flat(model: nn.Module) -> Tensor:
    """``flat`` that gathers FSDP2 shards (DTensors) first."""
    return torch.cat(
        [
            (p.full_tensor() if hasattr(p, "full_tensor") else p.detach()).reshape(-1)
            for p in model.parameters()
        ]
    )


# --------------------------------------------------------------------------------------------
# First-order optimizers: DDP all-reduces .grad; the optimizer runs unchanged on every rank.
# --------------------------------------------------------------------------------------------


def _first_order(factory: Callable[[nn.Module], torch.optim.Optimizer]) -> dict[str, Any]:
    x, y = data()
    module = make_model()
    model = wrap(module)
    opt = factory(module)
    for idx in batches():
        opt.zero_grad()
        mse(model(shard(x[idx])), shard(y[idx])).backward()
        opt.step()
    return {"params": flat(module)}


def _optimizers() -> dict[str, Callable[[nn.Module], torch.optim.Optimizer]]:
    from optforge.optim import AdaGradNorm, Langevin, NoisyOptimizer, OptimisticSGD

    return {
        "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
        "optimistic_sgd": lambda m: OptimisticSGD(m.parameters(), lr=0.1),
        "adagrad_norm": lambda m: AdaGradNorm(m.parameters(), lr=0.3),
        "noisy_sgd": lambda m: NoisyOptimizer(
            torch.optim.SGD(m.parameters(), lr=0.1), eta=0.01, seed=11
        ),
        "langevin": lambda m: Langevin(m.parameters(), lr=0.05, beta=100.0, seed=5),
    }


def first_order() -> dict[str, Any]:
    return {name: _first_order(f) for name, f in _optimizers().items()}


def noise_draws() -> dict[str, Any]:
    """The raw noise each stochastic optimizer adds at its first step (zero gradients, so the
    step is the noise alone)."""
    from optforge.optim import Langevin, NoisyOptimizer

    out = {}
    for name, factory in {
        "noisy_sgd": lambda m: NoisyOptimizer(torch.optim.SGD(m.parameters(), lr=1.0), seed=3),
        "langevin": lambda m: Langevin(m.parameters(), lr=0.5, beta=1.0, seed=3),
    }.items():
        module = make_model()
        before = flat(module)
        opt = factory(module)
        for p in module.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        out[name] = flat(module) - before
    return out


# --------------------------------------------------------------------------------------------
# AdAdaGrad: per-rank statistics all-reduced, the same batch size on every rank.
# --------------------------------------------------------------------------------------------


def adadagrad(fsdp: bool = False) -> dict[str, Any]:
    from optforge.optim import AdAdaGrad

    x, y = data()
    module = make_model()
    model = wrap(module, fsdp)
    opt = AdAdaGrad(module.parameters(), lr=0.2, eta=0.5, initial_batch_size=4, max_batch_size=N)
    g = torch.Generator().manual_seed(9)
    sizes = []
    for _ in range(STEPS + 2):
        idx = torch.randperm(N, generator=g)[: opt.batch_size]
        opt.zero_grad()
        if opt.controller.should_test():
            opt.backward(module, mse, shard(x[idx]), shard(y[idx]))
        else:  # capped: a plain DDP backward (equal shards: N is even)
            mse(model(shard(x[idx])), shard(y[idx])).backward()
        opt.step()
        sizes.append(opt.batch_size)
    return {"params": full_flat(module), "batch_sizes": torch.tensor(sizes)}


# --------------------------------------------------------------------------------------------
# Methods that never read .grad (Sven, SSO, GradNormSmoothNewton): DDP's gradient all-reduce does
# not reach them. Policy: all-gather the batch, then every rank steps on the union batch.
# --------------------------------------------------------------------------------------------


def sven(gather_batch: bool = True, fsdp: bool = False) -> dict[str, Any]:
    from optforge.optim import Sven

    x, y = data()
    module = wrap(make_model(), fsdp) if fsdp else make_model()
    opt = Sven(module.parameters(), lr=0.5, k=6, seed=0)
    for idx in batches():
        xb, yb = shard(x[idx]), shard(y[idx])
        if gather_batch:
            xb, yb = gather(xb), gather(yb)
        opt.step(model=module, loss_fn=per_example_mse, inputs=xb, targets=yb)
    return {"params": full_flat(module)}


def sso(fsdp: bool = False) -> dict[str, Any]:
    from optforge.optim import SSO

    x, y = data()
    module = wrap(make_model(), fsdp) if fsdp else make_model()
    opt = SSO(module.parameters(), lr=1.0, target_lr=1.0, inner_steps=3)
    for idx in batches():
        xb, yb = gather(shard(x[idx])), gather(shard(y[idx]))
        opt.step(
            forward=lambda xb=xb: module(xb).squeeze(-1), target_loss=lambda z, yb=yb: mse(z, yb)
        )
    return {"params": full_flat(module)}


def gns(fsdp: bool = False) -> dict[str, Any]:
    from optforge.optim import GradNormSmoothNewton

    x, y = data()
    module = wrap(make_model(), fsdp) if fsdp else make_model()
    opt = GradNormSmoothNewton(module.parameters(), hessian="exact")
    xb, yb = gather(shard(x)), gather(shard(y))
    for _ in range(2):
        opt.step(lambda: mse(module(xb), yb))
    return {"params": full_flat(module)}


# --------------------------------------------------------------------------------------------
# Checkpoints through torch.distributed.checkpoint with optforge.distributed.OptimizerState:
# save after 2 steps, load into a freshly built model (another init) and optimizer that never
# stepped, 2 more steps; the same checkpoint is also loaded by one process (test_ddp.py).
# --------------------------------------------------------------------------------------------


def _dcp_cases() -> dict[str, tuple[Callable[[nn.Module], Any], str]]:
    """name -> (optimizer factory, call form)."""
    from optforge.optim import (
        SSO,
        AdAdaGrad,
        AdAdaGradNorm,
        AdaGradNorm,
        GradientNoise,
        GradNormSmoothNewton,
        Langevin,
        NoisyOptimizer,
        OptimisticSGD,
        Sven,
    )
    from optforge.optim.hessian_approx import LazyHessian

    def sgd_with_noise_hook(m: nn.Module) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        noise = GradientNoise(list(m.parameters()), eta=0.01, seed=13)
        noise.attach(opt)
        opt.gradient_noise = noise  # type: ignore[attr-defined]  # saved by DCP as a Stateful
        return opt

    return {
        "optimistic_sgd": (lambda m: OptimisticSGD(m.parameters(), lr=0.1), "grad"),
        "adagrad_norm": (lambda m: AdaGradNorm(m.parameters(), lr=0.3), "grad"),
        "langevin": (lambda m: Langevin(m.parameters(), lr=0.05, beta=100.0, seed=5), "grad"),
        "noisy_sgd": (
            lambda m: NoisyOptimizer(
                torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), eta=0.01, seed=11
            ),
            "grad",
        ),
        "gradient_noise": (sgd_with_noise_hook, "grad"),
        "adadagrad": (
            lambda m: AdAdaGrad(
                m.parameters(), lr=0.2, eta=0.5, initial_batch_size=4, max_batch_size=N
            ),
            "adaptive",
        ),
        "adadagrad_norm": (
            lambda m: AdAdaGradNorm(
                m.parameters(), lr=0.2, eta=0.5, initial_batch_size=4, max_batch_size=N
            ),
            "adaptive",
        ),
        "sven": (lambda m: Sven(m.parameters(), lr=0.5, k=6, seed=0), "sven"),
        "sso": (lambda m: SSO(m.parameters(), lr=1.0, target_lr=1.0, inner_steps=3), "sso"),
        "gns": (
            lambda m: GradNormSmoothNewton(m.parameters(), hessian=LazyHessian("exact", every=3)),
            "gns",
        ),
    }


DCP_FSDP2 = ("optimistic_sgd", "adagrad_norm", "langevin", "noisy_sgd", "gradient_noise")


def _train(form: str, model: nn.Module, module: nn.Module, opt: Any, idxs: list[Tensor]) -> None:
    """Steps of ``opt`` in its call form on this rank's shard (gathered where the method needs
    the union batch)."""
    x, y = data()
    for idx in idxs:
        xb, yb = shard(x[idx]), shard(y[idx])
        if form == "grad":
            opt.zero_grad()
            mse(model(xb), yb).backward()
            opt.step()
        elif form == "adaptive":
            opt.zero_grad()
            opt.backward(module, mse, xb, yb)
            opt.step()
        elif form == "sven":
            opt.step(model=module, loss_fn=per_example_mse, inputs=gather(xb), targets=gather(yb))
        elif form == "sso":
            xg, yg = gather(xb), gather(yb)
            opt.step(
                forward=lambda xg=xg: module(xg).squeeze(-1),
                target_loss=lambda z, yg=yg: mse(z, yg),
            )
        else:  # gns: full batch
            xg, yg = gather(shard(x)), gather(shard(y))
            opt.step(lambda xg=xg, yg=yg: mse(module(xg), yg))


def _dcp_state(model: nn.Module, opt: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from optforge.distributed import OptimizerState

    state = {"model": get_model_state_dict(model), "optim": OptimizerState(model, opt)}
    if hasattr(opt, "gradient_noise"):
        state["noise"] = opt.gradient_noise  # GradientNoise is itself a DCP Stateful
    return state


def _dcp_load(model: nn.Module, opt: Any, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    state = _dcp_state(model, opt)
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])


def checkpoint(directory: str, fsdp: bool = False) -> dict[str, Any]:
    """Save after 2 steps on every rank, continue 2 steps (``expected``); reload into a fresh
    model (another init) and a fresh optimizer, 2 steps (``resumed``). With ``fsdp`` only the
    elementwise optimizers, under FSDP2 (an error is recorded, not raised)."""
    import torch.distributed.checkpoint as dcp

    out: dict[str, Any] = {}
    cases = _dcp_cases()
    names = DCP_FSDP2 if fsdp else tuple(cases)
    for name in names:
        factory, form = cases[name]
        idxs = batches(steps=4)
        path = os.path.join(directory, ("fsdp2_" if fsdp else "") + name)
        try:
            module = make_model()
            model = wrap(module, fsdp)
            opt = factory(model if fsdp else module)
            _train(form, model, module, opt, idxs[:2])
            dcp.save(_dcp_state(model, opt), checkpoint_id=path)
            _train(form, model, module, opt, idxs[2:])
            expected = full_flat(module)

            module2 = make_model(seed=1)  # another init: everything must come from the file
            model2 = wrap(module2, fsdp)
            opt2 = factory(model2 if fsdp else module2)  # never stepped
            _dcp_load(model2, opt2, path)
            _train(form, model2, module2, opt2, idxs[2:])
            out[name] = {"expected": expected, "resumed": full_flat(module2), "error": ""}
        except Exception as err:
            out[name] = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
            if os.environ.get("DDP_JOBS_DEBUG"):
                traceback.print_exc()
    if not fsdp:
        out["langevin_torch_helpers_only"] = _torch_helpers_only(directory)
    return out


def _torch_helpers_only(directory: str) -> dict[str, Tensor]:
    """The hazard OptimizerState removes: torch's helpers alone keep only ``state`` and
    ``param_groups``, so a resumed Langevin restarts its noise stream."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    factory, form = _dcp_cases()["langevin"]
    idxs = batches(steps=4)
    path = os.path.join(directory, "langevin_torch_helpers_only")
    module = make_model()
    model = wrap(module)
    opt = factory(module)
    _train(form, model, module, opt, idxs[:2])
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.save(state, checkpoint_id=path)
    _train(form, model, module, opt, idxs[2:])
    module2 = make_model(seed=1)
    model2 = wrap(module2)
    opt2 = factory(module2)
    state = {"model": get_model_state_dict(model2), "optim": get_optimizer_state_dict(model2, opt2)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model2, state["model"])
    set_optimizer_state_dict(model2, opt2, state["optim"])
    _train(form, model2, module2, opt2, idxs[2:])
    return {"expected": full_flat(module), "resumed": full_flat(module2)}


def resume_one_process(directory: str, fsdp: bool = False) -> dict[str, Tensor]:
    """Load the 2-rank checkpoints in this process (world size 1: DCP re-shards), then the last
    2 steps on the union batch."""
    out: dict[str, Tensor] = {}
    cases = _dcp_cases()
    for name in DCP_FSDP2 if fsdp else tuple(cases):
        path = os.path.join(directory, ("fsdp2_" if fsdp else "") + name)
        if not os.path.isdir(path):
            continue
        factory, form = cases[name]
        module = make_model(seed=2)
        opt = factory(module)
        _dcp_load(module, opt, path)
        _train(form, module, module, opt, batches(steps=4)[2:])
        out[name] = flat(module)
    return out


# --------------------------------------------------------------------------------------------
# FSDP2 (fully_shard) on CPU: which optimizers run on DTensor shards.
# --------------------------------------------------------------------------------------------


def fsdp2() -> dict[str, Any]:
    x, y = data()
    out: dict[str, Any] = {}
    # The other elementwise optimizers under FSDP2: tests/distributed/test_fsdp2_elementwise.py.
    for name, factory in _optimizers().items():
        if name not in ("sgd", "optimistic_sgd"):
            continue
        module = wrap(make_model(), fsdp=True)
        try:
            opt = factory(module)
            for idx in batches():
                opt.zero_grad()
                mse(module(shard(x[idx])), shard(y[idx])).backward()
                opt.step()
            out[name] = {"params": full_flat(module), "error": ""}
        except Exception as err:
            out[name] = {"params": None, "error": f"{type(err).__name__}: {err}".splitlines()[0]}
            if os.environ.get("DDP_JOBS_DEBUG"):
                traceback.print_exc()
    for name, job in {"adadagrad": adadagrad, "sven": sven, "sso": sso, "gns": gns}.items():
        try:
            out[name] = {"params": job(fsdp=True)["params"], "error": ""}
        except Exception as err:
            out[name] = {"params": None, "error": f"{type(err).__name__}: {err}".splitlines()[0]}
            if os.environ.get("DDP_JOBS_DEBUG"):
                traceback.print_exc()
    return out


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "first_order": first_order,
    "noise": noise_draws,
    "adadagrad": adadagrad,
    "sven_gathered": sven,
    "sven_local": lambda: sven(gather_batch=False),
    "sso": sso,
    "gns": gns,
}


def run_all(directory: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, job in JOBS.items():
        results[name] = job()
    results["checkpoint"] = checkpoint(directory)
    results["checkpoint_fsdp2"] = checkpoint(directory, fsdp=True)
    results["fsdp2"] = fsdp2()
    return results


def main(out_dir: str) -> None:
    rank_main(out_dir, lambda: run_all(str(Path(out_dir) / "checkpoints")))


if __name__ == "__main__":
    main(sys.argv[1])
