"""Step-time and memory overhead of ELRLoss, as ratios against ``torch.nn.CrossEntropyLoss``.

Measures, in one process on the same MLP, batch and ``torch.optim.Adam(fused=True)``: a full
training step (forward, loss, backward, optimizer step) with cross-entropy and with
``optforge.losses.ELRLoss`` (input validation, target update, regulariser). Timings are
medians over interleaved rounds so machine drift cancels.

Run: ``python benchmarks/elr.py [--device cuda] [--batch 64] [--width 256] [--n 50000]``.
Prints one JSON object with the median step times, the ratio and the target buffer size.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from optforge.losses import ELRLoss
from optforge.repro.timing import time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dev = args.device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 64, generator=gen).to(dev)
    y = torch.randint(0, args.classes, (args.n,), generator=gen).to(dev)

    def make(loss: str):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, args.width), nn.ReLU(), nn.Linear(args.width, args.classes)
        ).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        ce = nn.CrossEntropyLoss()
        elr = ELRLoss(args.n, args.classes).to(dev)

        order = torch.randperm(args.n, generator=gen).to(dev)
        cursor = [0]

        def step() -> None:  # epoch-style sampling: no duplicate index in a batch
            start = cursor[0] % (args.n - args.batch)
            cursor[0] += args.batch
            idx = order[start : start + args.batch]
            logits = model(x[idx])
            value = elr(logits, y[idx], idx) if loss == "elr" else ce(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()

        return step

    steps = {"ce": make("ce"), "elr": make("elr")}
    med = {k: v * 1e3 for k, v in time_interleaved(steps, dev, args.repeats, warmup=10).items()}
    print(
        json.dumps(
            {
                "device": dev,
                "batch": args.batch,
                "width": args.width,
                "num_examples": args.n,
                "step_ms_ce": round(med["ce"], 4),
                "step_ms_elr": round(med["elr"], 4),
                "ratio_elr_over_ce": round(med["elr"] / med["ce"], 3),
                "target_buffer_mb": args.n * args.classes * 4 / 2**20,
            }
        )
    )


if __name__ == "__main__":
    main()
