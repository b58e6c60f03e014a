"""Saved-activation bytes and step time of WTA-CRS layers, as ratios against ``nn.Linear``.

Model: embedding → ``depth`` residual blocks ``x + fc2(relu(fc1(x)))`` (MLP ``4·width``) → head,
one forward + backward of the cross-entropy per step. Variants, in one process on the same
weights and batch:

* ``linear``: plain ``nn.Linear`` + ``nn.ReLU`` (the baseline);
* ``checkpoint``: ``torch.utils.checkpoint`` (non-reentrant) around every block;
* ``wta-0.3``, ``wta-0.1``, ``crs-0.3``: ``optforge.nn.convert_linear`` on fc1/fc2 plus
  ``convert_relu`` (1-bit ReLU masks).

Saved bytes come from ``optforge.nn.saved_tensor_bytes`` (exact, machine independent, parameters
excluded); on CUDA the peak of ``torch.cuda.max_memory_allocated`` per step is reported too.

Run: ``python benchmarks/wta_crs.py [--device cuda] [--width 512] [--depth 4] [--batch 16]``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from optforge.nn import convert_linear, convert_relu, peak_memory_bytes, saved_tensor_bytes
from optforge.repro.timing import time_interleaved


class Net(nn.Module):
    def __init__(self, vocab: int, d: int, depth: int, checkpoint: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d)) for _ in range(depth)
        )
        self.head = nn.Linear(d, vocab)
        self.checkpoint = checkpoint

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            if self.checkpoint:
                x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = x + block(x)
        return F.cross_entropy(self.head(x).flatten(0, 1), ids.flatten())


def _build(variant: str, args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(0)
    net = Net(args.vocab, args.width, args.depth, checkpoint=variant == "checkpoint")
    if variant.startswith(("wta", "crs")):
        method, ratio = variant.split("-")
        convert_relu(net)
        convert_linear(net, float(ratio), include=("*.0", "*.2"), method=method)
    return net.to(args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = ("linear", "checkpoint", "wta-0.3", "wta-0.1", "crs-0.3")
    nets = {v: _build(v, args) for v in variants}
    ids = torch.randint(
        args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)
    )
    ids = ids.to(args.device)

    saved = {
        v: saved_tensor_bytes(lambda net=net: net(ids), exclude=net.parameters())
        for v, net in nets.items()
    }
    peak = {}
    if args.device.startswith("cuda"):
        peak = {
            v: peak_memory_bytes(lambda net=net: net(ids), args.device) for v, net in nets.items()
        }

    def step(net: nn.Module) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            net(ids).backward()

        return run

    # interleaved rounds so that drift cancels
    steps = {v: step(net) for v, net in nets.items()}
    median = time_interleaved(steps, args.device, args.repeats, warmup=3)
    result = {
        "config": vars(args),
        "saved_bytes": saved,
        "saved_ratio_vs_linear": {v: saved[v] / saved["linear"] for v in variants},
        "step_time_s": median,
        "step_time_ratio_vs_linear": {v: median[v] / median["linear"] for v in variants},
    }
    if peak:
        result["cuda_peak_bytes"] = peak
        result["cuda_peak_ratio_vs_linear"] = {v: peak[v] / peak["linear"] for v in variants}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
