"""Cost of an AdAdaGrad step with the batch-size test, as ratios against a plain Adagrad step.

Measured in one process on the same model and batch (interleaved rounds, medians):

* ``adagrad``: ``torch.optim.Adagrad`` — forward, backward of the mean loss, step (baseline);
* ``adadagrad(no test)``: ``AdAdaGrad`` on a step where no test is due (plain backward);
* ``adadagrad(norm)``: per-example gradients with ``torch.func.vmap``, the norm-test statistics,
  the mean written into ``.grad``, the step and the batch-size update;
* ``adadagrad(ip+orth)``: the augmented inner-product test (same single pass when one chunk);
* ``adadagrad(norm, 4 chunks)``: the norm test computed in 4 micro-batches (memory cap).

Run: ``python benchmarks/adadagrad.py [--device cuda] [--batch 256] [--width 512]``.
Prints one JSON object with the median step times (ms) and the ratios to ``adagrad``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from optforge.optim import AdAdaGrad
from optforge.repro.timing import time_interleaved


def _model(width: int, device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10)
    ).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, b = args.device, args.batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 64, generator=gen).to(device)
    y = torch.randint(0, 10, (b,), generator=gen).to(device)

    base_model = _model(args.width, device)
    base = torch.optim.Adagrad(base_model.parameters(), lr=1e-3)

    def adagrad() -> None:
        base.zero_grad()
        F.cross_entropy(base_model(x), y).backward()
        base.step()

    def adadagrad(test: str, chunk: int | None, due: bool) -> Callable[[], None]:
        model = _model(args.width, device)
        # a huge eta keeps the batch size (so the cost) fixed while the test still runs; at the
        # cap (max_batch_size = batch size) the test is skipped: a plain backward
        opt = AdAdaGrad(
            model.parameters(),
            lr=1e-3,
            test=test,
            eta=1e6,
            theta=1e6,
            nu=1e6,
            initial_batch_size=2,
            max_batch_size=None if due else 2,
        )

        def step() -> None:
            opt.zero_grad()
            opt.backward(model, F.cross_entropy, x, y, chunk_size=chunk)
            opt.step()

        return step

    steps = {
        "adagrad": adagrad,
        "adadagrad(no test)": adadagrad("norm", None, due=False),
        "adadagrad(norm)": adadagrad("norm", None, due=True),
        "adadagrad(ip+orth)": adadagrad("augmented_inner_product", None, due=True),
        "adadagrad(norm, 4 chunks)": adadagrad("norm", max(1, b // 4), due=True),
    }
    times = time_interleaved(steps, device, args.repeats)
    n_params = sum(p.numel() for p in base_model.parameters())
    out = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads,
        "batch": b,
        "params": n_params,
        "median_ms": {k: round(v * 1e3, 3) for k, v in times.items()},
        "ratio_vs_adagrad": {k: round(v / times["adagrad"], 2) for k, v in times.items()},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
