"""Langevin dynamics under FSDP2 (``fully_shard``) on CPU: each rank holds a shard of every
parameter and adds the matching slice of one global noise stream, so the result is the one of a
single process with the same seed, whatever the number of processes.

Run::

    torchrun --nproc-per-node 2 examples/fsdp2_langevin.py

(gloo on CPU; a tiny MLP, a few steps). It prints the loss per step and the checksum of the
final parameters, identical for ``--nproc-per-node 1, 2, 4``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from optforge.optim import Langevin


def main(steps: int = 5) -> torch.Tensor:
    """Train a tiny MLP for ``steps`` Langevin steps under FSDP2; returns the full parameters."""
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial model and data on every rank
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)  # parameters are now DTensors, sharded along dim 0
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    opt = Langevin(model.parameters(), lr=1e-2, beta=1e4, seed=0)
    for step in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)  # every rank: the same batch
        loss.backward()  # FSDP2 reduce-scatters (averages) the gradients
        opt.step()  # SGD step + this shard's slice of the global noise
        if rank == 0:
            print(f"step {step}: loss {loss.item():.6f}")
    full = torch.cat([p.full_tensor().reshape(-1) for p in model.parameters()])
    if rank == 0:
        print(f"world size {dist.get_world_size()}: parameter checksum {full.sum().item():.12f}")
    if own_group:
        dist.destroy_process_group()
    return full


if __name__ == "__main__":
    main()
