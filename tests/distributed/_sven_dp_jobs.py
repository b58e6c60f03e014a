"""Scenarios of ``test_sven_data_parallel.py``: data-parallel Sven (``data_parallel=True``), run
on every rank of a gloo group (``python _sven_dp_jobs.py OUT_DIR`` with ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR``/``MASTER_PORT`` set), or in one process on the union batch (the reference).
Float64 throughout, so "equal to one process" means to rounding.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist
from _spawn import rank_main
from torch import Tensor, nn

N, D_IN, HIDDEN, STEPS = 40, 3, 8, 3


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1))
    ids = torch.randint(0, 9, (N, 4), generator=g)
    return x, y, ids


class Tokens(nn.Module):
    """Embedding -> LayerNorm -> Linear over 4 positions -> one output per example."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 5, padding_idx=0)
        self.norm = nn.LayerNorm(5)
        self.lin = nn.Linear(5, 1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.lin(torch.tanh(self.norm(self.emb(ids)))).mean(dim=(1, 2))


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)).double()
    return Tokens().double()


def per_example_mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.reshape(target.shape) - target).pow(2)


def batches() -> list[Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randperm(N, generator=g)[:16] for _ in range(STEPS)]


def shard(t: Tensor) -> Tensor:
    rank, size = world()
    return t.tensor_split(size)[rank]


def run(kind: str, **options: Any) -> dict[str, Any]:
    """``STEPS`` Sven steps; each rank passes its shard of every global batch."""
    from optforge.optim import Sven

    x, y, ids = data()
    inputs = x if kind == "mlp" else ids
    model = make_model(kind)
    opt = Sven(model.parameters(), lr=0.5, data_parallel=True, **options)
    losses = []
    for idx in batches():
        losses.append(
            opt.step(
                model=model,
                loss_fn=per_example_mse,
                inputs=shard(inputs[idx]),
                targets=shard(y[idx]),
            )
        )
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"params": flat, "losses": torch.stack(losses), "path": opt.last_path}


def refused() -> str:
    """A step the Gram path cannot take: every rank raises the same error, nobody hangs."""
    from optforge.optim import Sven

    x, y, _ = data()
    model = make_model("mlp")
    opt = Sven(model.parameters(), svd="full", data_parallel=True)
    try:
        opt.step(model=model, loss_fn=per_example_mse, inputs=shard(x[:8]), targets=shard(y[:8]))
    except ValueError as err:
        return str(err)
    return ""


JOBS = {
    "mlp": lambda: run("mlp", k=10),
    "mlp_microbatch_kappa": lambda: run("mlp", microbatch_size=2, kappa=1.0, momentum=0.5),
    "tokens": lambda: run("tokens", rtol=1e-6),
}


def main(out_dir: str) -> None:
    rank_main(
        out_dir, lambda: {**{name: job() for name, job in JOBS.items()}, "refused": refused()}
    )


if __name__ == "__main__":
    main(sys.argv[1])
