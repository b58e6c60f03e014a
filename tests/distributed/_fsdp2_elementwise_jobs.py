"""The FSDP2 scenarios of ``test_fsdp2_elementwise.py``: every elementwise optimizer on a tiny
float64 MLP whose layers are ``fully_shard``-ed, run on every rank of a gloo group
(``python _fsdp2_elementwise_jobs.py OUT_DIR`` with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` set), and the same optimizers without FSDP in one process (the reference).

Every rank sees the same batch, so FSDP2's averaged gradient is the one-process gradient; the
noise must then be the one of one process for the parameters to agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _spawn import rank_main
from torch import nn

from optforge.optim import AdaGradNorm, GradientNoise, Langevin, NoisyOptimizer, OptimisticSGD

STEPS = 3
HERE = Path(__file__).resolve().parent


def _noise_hook(params: Any) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(params, lr=0.05)
    GradientNoise(opt.param_groups, eta=0.01, seed=3).attach(opt)
    return opt


CASES: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "langevin": lambda ps: Langevin(ps, lr=0.02, beta=50.0, seed=0),
    "langevin_group": lambda ps: Langevin(ps, lr=0.02, beta=50.0, sphere="group", seed=1),
    "langevin_tensor_expmap": lambda ps: Langevin(
        ps, lr=0.02, beta=50.0, sphere="tensor", retraction="expmap", seed=2
    ),
    "langevin_rows": lambda ps: Langevin(ps, lr=0.02, beta=50.0, sphere="rows", seed=3),
    "noisy_sgd": lambda ps: NoisyOptimizer(torch.optim.SGD(ps, lr=0.05), eta=0.01, seed=4),
    "noisy_adam_clip": lambda ps: NoisyOptimizer(
        torch.optim.Adam(ps, lr=0.01), eta=0.01, seed=5, max_grad_norm=0.5
    ),
    "gradient_noise_hook": _noise_hook,
    "adagrad_norm_global": lambda ps: AdaGradNorm(ps, lr=0.1),
    "adagrad_norm_layer": lambda ps: AdaGradNorm(ps, lr=0.1, granularity="layer"),
    "optimistic_sgd": lambda ps: OptimisticSGD(ps, lr=0.05),
}


# refused with a named error under FSDP2 (never a silent wrong result)
REFUSALS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adagrad_norm_row": lambda ps: AdaGradNorm(ps, lr=0.1, granularity="row"),
}


def make_model(fsdp: bool) -> nn.Module:
    torch.manual_seed(0)
    # 6 and 1 output rows: uneven shards over 4 ranks, and empty shards on some ranks
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    return model


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def run_case(name: str, fsdp: bool) -> torch.Tensor:
    model = make_model(fsdp)
    opt = {**CASES, **REFUSALS}[name](model.parameters())
    x, y = data()
    for _ in range(STEPS):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return torch.cat(
        [
            (p.full_tensor() if hasattr(p, "full_tensor") else p.detach()).reshape(-1)
            for p in model.parameters()
        ]
    )


def reference() -> dict[str, torch.Tensor]:
    """Every case in one process without FSDP."""
    return {name: run_case(name, fsdp=False) for name in CASES}


def run_all() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in (*CASES, *REFUSALS):
        try:
            results[name] = run_case(name, fsdp=True)
        except Exception as err:  # recorded, the test names it
            results[name] = f"{type(err).__name__}: {err}"
    # the example script (examples/fsdp2_langevin.py), on the same spawn
    sys.path.insert(0, str(HERE.parents[1] / "examples"))
    import fsdp2_langevin

    results["example"] = fsdp2_langevin.main()
    return results


def main(out_dir: str) -> None:
    rank_main(out_dir, run_all)


if __name__ == "__main__":
    main(sys.argv[1])
