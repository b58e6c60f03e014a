"""Benchmark: time to a target relative error of robust (sketched) AltMin vs exact AltMin and
SoftImpute, as ratios, at two sizes.

For an incoherent rank-k matrix (``make_incoherent_lowrank``, condition number 2) observed at
p = 4k·ln(n)/n, runs in the same process

* exact AltMin (JNS13, batched BLAS-3 normal equations),
* robust AltMin (CountSketch s = 4k + PCG, q = 2), and
* SoftImpute along a warm-started λ path (the ``altmin-completion`` reproduction's baseline),

and reports the wall time until the relative Frobenius error (from factors) first drops below
``--target`` (SoftImpute: below ``--soft-target``, as it is biased by its shrinkage), plus the
ratios exact / robust and SoftImpute / robust (> 1 means robust is faster).

Run::

    .venv/bin/python benchmarks/altmin.py                          # CPU, 1 thread
    .venv/bin/python benchmarks/altmin.py --device cuda --sizes 4000 16000 --rank 32 --no-soft
"""

from __future__ import annotations

import argparse
import math

import torch

from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG
from optforge.problems import make_incoherent_lowrank
from optforge.repro.bench import altmin_time_to_target, soft_impute_time_to_target


def _time_to_target(solver, problem, target, device, max_sweeps) -> float:
    """Seconds until the relative error (evaluated after every sweep, counted in the time:
    O((m+n)k²)) is <= target; inf if never within ``max_sweeps``."""
    return altmin_time_to_target(problem, solver, target, device, max_sweeps).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--target", type=float, default=1e-6)
    parser.add_argument("--soft-target", type=float, default=1e-4)
    parser.add_argument("--max-sweeps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-soft", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    k = args.rank
    print(f"device={args.device} dtype={args.dtype} threads={args.threads} k={k}")
    print(
        "n     |Omega|   exact_s  robust_s  soft_s(1e-4)  robust_s(1e-4)  exact/robust  soft/robust"
    )
    for n in args.sizes:
        p = min(1.0, 4 * k * math.log(n) / n)
        problem = make_incoherent_lowrank(
            n,
            n,
            k,
            p=p,
            generator=torch.Generator(device=args.device).manual_seed(0),
            dtype=dtype,
            device=args.device,
        )
        # warm-up (allocator, layouts)
        _time_to_target(ExactNormalEquations(), problem, 1.0, args.device, 1)
        g = torch.Generator(device=args.device).manual_seed(2)
        t_exact = _time_to_target(
            ExactNormalEquations(), problem, args.target, args.device, args.max_sweeps
        )
        t_rob = _time_to_target(
            SketchPreconditionedCG(max_iter=2, generator=g),
            problem,
            args.target,
            args.device,
            args.max_sweeps,
        )
        t_rob_soft = _time_to_target(
            SketchPreconditionedCG(max_iter=2, generator=g),
            problem,
            args.soft_target,
            args.device,
            args.max_sweeps,
        )
        t_soft = (
            math.nan
            if args.no_soft
            else soft_impute_time_to_target(problem, args.soft_target).seconds
        )
        print(
            f"{n:<5} {problem[3].numel():<9} {t_exact:<8.3f} {t_rob:<9.3f} {t_soft:<13.3f} "
            f"{t_rob_soft:<15.3f} {t_exact / t_rob:<13.2f} {t_soft / t_rob_soft:.2f}"
        )


if __name__ == "__main__":
    main()
