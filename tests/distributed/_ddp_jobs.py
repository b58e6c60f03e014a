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
# Checkpoints through torch.distributed.checkpoint.
# --------------------------------------------------------------------------------------------


def _extras(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state_dict entries besides ``state``/``param_groups`` (generator states,
    the batch-size controller): the DCP helpers keep only those two keys."""
    return {k: v for k, v in opt.state_dict().items() if k not in ("state", "param_groups")}


def _restore_extras(opt: torch.optim.Optimizer, extras: dict[str, Any]) -> None:
    if extras:
        opt.load_state_dict({**opt.state_dict(), **extras})


def checkpoint(directory: str) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from optforge.optim import AdAdaGrad, Langevin, NoisyOptimizer, OptimisticSGD

    factories: dict[str, Callable[[nn.Module], Any]] = {
        "optimistic_sgd": lambda m: OptimisticSGD(m.parameters(), lr=0.1),
        "langevin": lambda m: Langevin(m.parameters(), lr=0.05, beta=100.0, seed=5),
        "adadagrad": lambda m: AdAdaGrad(
            m.parameters(), lr=0.2, eta=0.5, initial_batch_size=4, max_batch_size=N
        ),
        "noisy_sgd": lambda m: NoisyOptimizer(
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), eta=0.01, seed=11
        ),
    }
    x, y = data()
    out: dict[str, Any] = {}

    def train(model: nn.Module, module: nn.Module, opt: Any, idxs: list[Tensor]) -> None:
        for idx in idxs:
            opt.zero_grad()
            if isinstance(opt, AdAdaGrad):
                opt.backward(module, mse, shard(x[idx]), shard(y[idx]))
            else:
                mse(model(shard(x[idx])), shard(y[idx])).backward()
            opt.step()

    def dcp_target(opt: Any) -> Any:
        # NoisyOptimizer nests {"base", "noise"}: the helpers need the base optimizer.
        return opt.base if isinstance(opt, NoisyOptimizer) else opt

    def extras(opt: Any) -> dict[str, Any]:
        if isinstance(opt, NoisyOptimizer):
            return {"noise": opt.noise.state_dict()}
        return _extras(opt)

    for name, factory in factories.items():
        idxs = batches(steps=4)
        module = make_model()
        model = wrap(module)
        opt = factory(module)
        train(model, module, opt, idxs[:2])
        path = os.path.join(directory, name)
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, dcp_target(opt)),
            "extras": extras(opt),
        }
        dcp.save(state, checkpoint_id=path)
        train(model, module, opt, idxs[2:])
        expected = flat(module)

        module2 = make_model(seed=1)  # a different init: everything must come from the file
        model2 = wrap(module2)
        opt2 = factory(module2)
        # One step builds the optimizer state so the load template has every tensor.
        train(model2, module2, opt2, idxs[:1])
        state2 = {
            "model": get_model_state_dict(model2),
            "optim": get_optimizer_state_dict(model2, dcp_target(opt2)),
            "extras": extras(opt2),
        }
        dcp.load(state2, checkpoint_id=path)
        set_model_state_dict(model2, state2["model"])
        set_optimizer_state_dict(model2, dcp_target(opt2), state2["optim"])
        if isinstance(opt2, NoisyOptimizer):
            opt2.noise.load_state_dict(state2["extras"]["noise"])
        else:
            _restore_extras(opt2, state2["extras"])
        train(model2, module2, opt2, idxs[2:])
        out[name] = {"expected": expected, "resumed": flat(module2)}

    # What the helpers do with the wrapper itself, and with a closure-only optimizer.
    from optforge.optim import Sven

    module = make_model()
    model = wrap(module)
    noisy = factories["noisy_sgd"](module)
    out["noisy_direct_error"] = _error(lambda: get_optimizer_state_dict(model, noisy))
    fresh_sven = Sven(module.parameters(), lr=0.5)
    out["sven_fresh_error"] = _error(
        lambda: set_optimizer_state_dict(
            model,
            fresh_sven,
            {"state": {}, "param_groups": fresh_sven.state_dict()["param_groups"]},
        )
    )
    return out


def _error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return ""


# --------------------------------------------------------------------------------------------
# FSDP2 (fully_shard) on CPU: which optimizers run on DTensor shards.
# --------------------------------------------------------------------------------------------


def fsdp2() -> dict[str, Any]:
    x, y = data()
    out: dict[str, Any] = {}
    for name, factory in _optimizers().items():
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
    results["fsdp2"] = fsdp2()
    return results


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        results = run_all(str(Path(out_dir) / "checkpoints"))
        dist.barrier()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    except Exception:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
