"""AltMin: wall time until a rank-k completion reaches a target relative error.

Rows ``altmin/robust-vs-exact`` and, at the ``full`` scale, ``altmin/robust-vs-softimpute``. On
an incoherent rank-``k`` ``n × n`` matrix (condition number 2, float64) observed at
``p = 4k·ln(n)/n``, robust AltMin (CountSketch + preconditioned CG, 2 PCG steps) is timed until
the relative Frobenius error (from the factors, evaluated after every sweep) first drops below
1e-6, against exact AltMin (JNS13 normal equations, target 1e-6) and SoftImpute
(:mod:`optforge.repro.baselines.soft_impute`, warm-started λ path, target 1e-4: its shrinkage
biases it). ``ratio`` is robust's time over the baseline's (``< 1``: robust is faster); the
SoftImpute path costs seconds even at ``n = 200``, so ``quick`` skips it.

:func:`altmin_time_to_target` and :func:`soft_impute_time_to_target` are also used by
``benchmarks/altmin.py`` (larger sizes, GPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optforge.repro.bench.registry import BenchEntry, register_bench
from optforge.repro.registry import Claim
from optforge.repro.timing import TargetResult, cost_ratio, time_to_target

__all__ = ["altmin", "altmin_time_to_target", "soft_impute_time_to_target"]

Problem = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]  # U*, s*, V*, rows, cols, vals


def altmin(device: str, n: int, k: int, soft_impute: bool = True) -> dict[str, dict]:
    """The ``altmin/...`` rows for an ``n × n`` rank-``k`` problem on ``device``."""
    from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG
    from optforge.problems import make_incoherent_lowrank

    target = 1e-6
    p = min(1.0, 4 * k * math.log(n) / n)
    gen = torch.Generator(device=device).manual_seed(0)
    problem = make_incoherent_lowrank(
        n, n, k, p=p, generator=gen, dtype=torch.float64, device=device
    )

    def robust() -> SketchPreconditionedCG:
        return SketchPreconditionedCG(
            max_iter=2, generator=torch.Generator(device=device).manual_seed(2)
        )

    altmin_time_to_target(problem, ExactNormalEquations(), target, device, 1)  # warm-up
    exact = altmin_time_to_target(problem, ExactNormalEquations(), target, device)
    fast = altmin_time_to_target(problem, robust(), target, device)
    rows_out = {
        "altmin/robust-vs-exact": {
            "ratio": cost_ratio(fast.seconds, exact.seconds),
            "seconds": fast.seconds,
            "baseline_seconds": exact.seconds,
            "reached": float(fast.reached),
            "sweeps": float(fast.recorded),
            "baseline_sweeps": float(exact.recorded),
        }
    }
    if not soft_impute:
        return rows_out
    soft = soft_impute_time_to_target(problem, 1e-4)
    fast_again = altmin_time_to_target(problem, robust(), target, device)
    rows_out["altmin/robust-vs-softimpute"] = {
        "ratio": cost_ratio(fast_again.seconds, soft.seconds),
        "seconds": fast_again.seconds,
        "baseline_seconds": soft.seconds,
    }
    return rows_out


def altmin_time_to_target(
    problem: Problem, solver: Any, target: float, device: str = "cpu", max_sweeps: int = 30
) -> TargetResult:
    """Time and sweeps of ``robust_altmin_complete`` with ``solver`` until the relative error
    (evaluated after every sweep, inside the timed run) is ``<= target``; it stops there.

    ``problem`` is the tuple of ``make_incoherent_lowrank``; the AltMin randomness comes from
    ``torch.Generator(device).manual_seed(1)``.
    """
    from optforge.matrix.altmin import relative_error, robust_altmin_complete

    u_star, s_star, v_star, rows, cols, vals = problem
    shape, k = (u_star.shape[0], v_star.shape[0]), u_star.shape[1]
    return time_to_target(
        lambda record: robust_altmin_complete(
            rows,
            cols,
            vals,
            shape,
            k,
            n_iters=max_sweeps,
            solver=solver,
            tol=0.0,
            generator=torch.Generator(device=device).manual_seed(1),
            callback=lambda sweep, u_hat, v: record(
                relative_error(u_hat, v, u_star, s_star, v_star)
            ),
        ),
        target,
        device,
    )


def soft_impute_time_to_target(problem: Problem, target: float) -> TargetResult:
    """Time until SoftImpute reaches ``target`` (relative error after each λ) along the
    warm-started path of 10 λ (CPU, numpy, rank ``2k``, 50 steps per λ, tol 1e-5, seed 0); the
    whole path runs."""
    from optforge.matrix.altmin import relative_error
    from optforge.repro.baselines import dense_observations, lambda_path, soft_impute_path

    u_star, s_star, v_star, rows, cols, vals = (
        t.cpu().double() if t.is_floating_point() else t.cpu() for t in problem
    )
    shape, k = (u_star.shape[0], v_star.shape[0]), u_star.shape[1]
    observed, mask = dense_observations(rows.numpy(), cols.numpy(), vals.numpy(), shape)
    lambdas = lambda_path(observed, 10)
    return time_to_target(
        lambda record: soft_impute_path(
            observed,
            mask,
            lambdas,
            2 * k,
            50,
            1e-5,
            0,
            lambda us, v: record(
                relative_error(torch.from_numpy(us), torch.from_numpy(v), u_star, s_star, v_star)
            ),
        ),
        target,
    )


def _run(config: Mapping[str, Any], device: str, scale: str, repeats: int) -> dict[str, dict]:
    return altmin(device, config["n"], config["k"], soft_impute=scale != "quick")


register_bench(
    BenchEntry(
        name="altmin",
        title="time to relative error 1e-6 of robust AltMin / exact AltMin, SoftImpute",
        run=_run,
        configs={"quick": {"n": 200, "k": 4}, "full": {"n": 1000, "k": 10}},
        claims=[
            Claim(
                name="robust-altmin-reaches-target",
                statement="Robust AltMin reaches relative error 1e-6 within 30 sweeps.",
                metric=lambda r: r.mean("altmin/robust-vs-exact", "reached"),
                op=">=",
                threshold=1.0,
            ),
        ],
        order=30,
    )
)
