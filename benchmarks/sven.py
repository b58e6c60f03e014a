"""Benchmark: Sven step time / Adam step time on the same model and batch, and Jacobian memory.

For MLPs 10 → w → w → 1 (GELU; P grows with w) and batch sizes B, measures the median wall time
of one optimizer step (forward + backward/Jacobian + update) of

* ``torch.optim.Adam(foreach=True)`` with ``nn.MSELoss()`` (the baseline), and
* :class:`optforge.optim.Sven` for every solver and k ∈ {8, 32, B/2},

and reports the ratio Sven / Adam, plus the bytes of the per-example Jacobian ``M`` (B × P in the
parameters' dtype from ``vmap(grad)``, plus its float64 copy for the solver) and, on CUDA, the
peak allocated memory of a Sven step.

Run::

    .venv/bin/python benchmarks/sven.py                    # CPU, 1 thread, small grid
    .venv/bin/python benchmarks/sven.py --device cuda --widths 64 256 1024 --batches 128 512
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from optforge.optim.sven import Sven
from optforge.repro.timing import median_time


def _mlp(width: int, device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(10, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1)
    ).to(device)


def bench(width: int, batch: int, device: str, repeats: int) -> list[dict[str, object]]:
    x = torch.randn(batch, 10, device=device)
    y = torch.randn(batch, 1, device=device)
    rows = []
    model = _mlp(width, device)
    n_params = sum(p.numel() for p in model.parameters())
    adam = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    mse = nn.MSELoss()

    def adam_step() -> None:
        adam.zero_grad(set_to_none=True)
        mse(model(x), y).backward()
        adam.step()

    t_adam = median_time(adam_step, device, repeats)  # 2 warm-up calls (torch.func, allocator)
    per_example = nn.MSELoss(reduction="none")
    m_bytes = batch * n_params * (4 + 8)
    for svd in ("gram", "full", "randomized", "lowrank"):
        for k in sorted({8, 32, batch // 2}):
            model = _mlp(width, device)
            sven = Sven(model.parameters(), lr=0.05, k=k, svd=svd, seed=0)

            def sven_step(sven=sven, model=model) -> None:
                sven.step(model=model, loss_fn=per_example, inputs=x, targets=y)

            peak = None
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = median_time(sven_step, device, repeats)
            if device.startswith("cuda"):
                peak = torch.cuda.max_memory_allocated() / 2**20
            rows.append(
                {
                    "P": n_params,
                    "B": batch,
                    "solver": svd,
                    "k": k,
                    "adam_ms": 1e3 * t_adam,
                    "sven_ms": 1e3 * t,
                    "ratio": t / t_adam,
                    "M_MiB": m_bytes / 2**20,
                    "peak_MiB": peak,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# Sven vs Adam step time ({name}, {args.threads} thread(s), torch {torch.__version__})")
    print("| P | B | solver | k | Adam ms | Sven ms | Sven/Adam | M MiB | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width in args.widths:
        for batch in args.batches:
            for r in bench(width, batch, args.device, args.repeats):
                peak = "-" if r["peak_MiB"] is None else f"{r['peak_MiB']:.1f}"
                print(
                    f"| {r['P']} | {r['B']} | {r['solver']} | {r['k']} | {r['adam_ms']:.2f} | "
                    f"{r['sven_ms']:.2f} | {r['ratio']:.1f} | {r['M_MiB']:.2f} | {peak} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
