"""Run the ``langevin-swa`` reproduction at a given scale/device and save the record and plot.

Usage: ``python benchmarks/langevin.py --scale full --device cuda --out DIR``. Prints one line
per finished trial, then the claims table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from optforge.repro import get, run_reproduction
from optforge.repro.report import plot_record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def progress(result) -> None:
        t = result.trial
        print(
            f"[{time.perf_counter() - start:7.1f}s] {t.method} seed {t.seed}: "
            f"{result.wall_time_s:.2f}s",
            flush=True,
        )

    record = run_reproduction(
        get("langevin-swa"),
        args.scale,
        n_seeds=args.seeds,
        device=args.device,
        on_trial_done=progress,
    )
    (out / f"langevin-swa-{args.scale}.json").write_text(json.dumps(record))
    plot_record(record, out / f"langevin-swa-{args.scale}.png")
    print(record["run_info"]["device_name"], "wall", record["run_info"]["wall_time_s"])
    for method, per_seed in record["metrics"].items():
        keys = sorted(k for k in next(iter(per_seed.values())) if k.startswith("sweep_"))
        for key in keys:
            vals = [v[key] for v in per_seed.values()]
            print(f"{method:14s} {key:24s} success rate {sum(vals) / len(vals):.3f}")
    for c in record["claims"]:
        print(f"{c['name']:32s} {c['value']:.4g} {c['op']} {c['threshold']:.4g} held={c['held']}")


if __name__ == "__main__":
    main()
