"""Reproduction ``altmin-completion``: alternating minimization with sketched, approximate
least-squares solves completes low-rank matrices as accurately as exact alternating
minimization, at O(|Ω|k) instead of O(|Ω|k²) cost.

The paper (arXiv 2302.11068) is theory only; the experiments are the spec's:

* R1 (arms ``exact``, ``sketch-pcg``, ``sketch-solve``, ``softimpute``): a synthetic incoherent
  rank-k matrix (Haar factors, condition number 2) observed at p = 4k·ln(n)/n. Relative
  Frobenius error (exact, from factors) after every sweep. ``softimpute`` is SoftImpute
  (Mazumder–Hastie–Tibshirani, :mod:`optforge.repro.baselines.soft_impute`) along the spec's
  warm-started λ path (10 values from 0.5‖P_Ω M‖₂, halving), ``max_rank = 2k``;
  fancyimpute's ``SoftImpute`` would be the library pick but 0.7.0 fails on scikit-learn >= 1.8.
* R2 (arm ``scaling-k``): analytic flop counts, and the wall time of one sweep (median of
  interleaved rounds) of the optimised exact solver and of the sketch solver (q = 3), versus k
  at fixed |Ω| (m = n, p = 0.5). The speed claim is taken at k = 64 with |Ω_j| ≈ 8s (s = 4k),
  where the O(|Ω|k) vs O(|Ω|k²) argument predicts a win; k = 16 is reported with the spec's bar.
* R3 (arm ``scaling-omega``): wall time per sweep of the O(|Ω|k) implementation (sketch solver,
  sparse backend) versus |Ω| at k = 8, median of interleaved rounds over the sizes, and sweeps to
  relative error 1e-6.
* R4 (arm ``digits``): scikit-learn's digits (1797 × 64, raw counts 0–16 from
  :func:`optforge.repro.data.digits`), 50 % of entries hidden, k = 10, ridge 1e-2·p (relative to
  the orthonormal factor's Gram, see ``run_digits``): held-out RMSE of robust vs exact AltMin vs
  column-mean imputation (``SimpleImputer``), and the imputers a user would reach for:
  scikit-learn's ``KNNImputer`` and ``IterativeImputer``, and SoftImpute.

Each seed draws the matrix from ``seed`` and the algorithm's randomness from ``1000 + seed``.
Every arm is its own trial (one per arm and seed: the arms share no work worth sharing, and the
timed R2 arm alone is the longest trial, issue #34); the three AltMin arms of R1 each draw the
seed's matrix (the same matrix, a fraction of a second). R1 and the SoftImpute baseline are
here; R2–R4 run in :mod:`optforge.repro.altmin_experiments`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optforge._core import seed_everything
from optforge.matrix.altmin import (
    ExactNormalEquations,
    SketchPreconditionedCG,
    relative_error,
    robust_altmin_complete,
)
from optforge.problems import make_incoherent_lowrank
from optforge.repro.altmin_experiments import (
    dtype_of,
    run_digits,
    run_scaling_k,
    run_scaling_omega,
)
from optforge.repro.baselines import soft_impute_path
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "METHODS", "run"]

_R1 = {"m": 800, "n": 800, "k": 10, "sweeps": 12, "cond": 2.0, "q": 2, "target": 1e-4}
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "dtype": "float64",
        "r1": {**_R1, "m": 200, "n": 200, "k": 4, "sweeps": 15},
        "r2": {"n": 400, "p": 1.0, "ks": [2, 4, 8, 16], "reps": 1},
    },
    "quick": {
        "dtype": "float64",
        "r1": _R1,
        "r2": {"n": 4000, "p": 0.5, "ks": [4, 8, 16, 64], "reps": 3},
        "r3": {"ns": [500, 1000, 2000, 4000], "k": 8, "max_sweeps": 15, "target": 1e-6, "reps": 5},
        "r4": {"k": 10, "hide": 0.5, "sweeps": 20, "ridge_scale": 1e-2},
        "softimpute": {"n_lambdas": 10, "max_iters": 50, "tol": 1e-5},
    },
    "full": {
        "dtype": "float32",
        "r1": {**_R1, "m": 5000, "n": 5000, "k": 20, "sweeps": 15, "target": 1e-3},
        "r2": {"n": 8000, "p": 0.5, "ks": [4, 8, 16, 32, 64, 128], "reps": 3},
        "r3": {
            "ns": [2000, 4000, 8000, 16000],
            "k": 8,
            "max_sweeps": 15,
            "target": 1e-3,
            "reps": 5,
        },
        "r4": {"k": 10, "hide": 0.5, "sweeps": 20, "ridge_scale": 1e-2},
        "softimpute": {"n_lambdas": 10, "max_iters": 50, "tol": 1e-5},
    },
}

ARMS = ("exact", "sketch-pcg", "sketch-solve", "softimpute", "scaling-k", "scaling-omega", "digits")
_ALTMIN_ARMS = {
    "exact": ("exact", 0),
    "sketch-pcg": ("sketch", _R1["q"]),
    "sketch-solve": ("sketch", 0),
}


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed, one after the other (each as its own trial would run it)."""
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        out[arm] = METHODS[arm](config, seed, device)
    return out


def _altmin_arm(arm: str) -> Callable[[Mapping[str, Any], int, str], dict[str, Any]]:
    def run_arm(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
        problem = _r1_problem(config, seed, device)
        return _run_altmin(config, seed, device, problem, *_ALTMIN_ARMS[arm])

    run_arm.__name__ = run_arm.__qualname__ = f"run_{arm.replace('-', '_')}"
    return run_arm


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _r1_problem(config: Mapping[str, Any], seed: int, device: str) -> tuple:
    c = config["r1"]
    p = min(1.0, 4 * c["k"] * math.log(c["n"]) / c["n"])
    gen = torch.Generator(device=device).manual_seed(seed)
    return make_incoherent_lowrank(
        c["m"],
        c["n"],
        c["k"],
        cond=c["cond"],
        p=p,
        generator=gen,
        dtype=dtype_of(config),
        device=device,
    )


def _time_to(curve: list[float], times: list[float], target: float) -> float:
    for err, t in zip(curve, times, strict=True):
        if err <= target:
            return float(t)
    return float("inf")


def _run_altmin(
    config: Mapping[str, Any], seed: int, device: str, problem: tuple, solver_kind: str, q: int
) -> dict[str, Any]:
    """R1: exact AltMin, or the sketch solver with ``q`` refinement steps, on ``problem``."""
    c = config["r1"]
    u_star, s_star, v_star, rows, cols, vals = problem
    gen = torch.Generator(device=device).manual_seed(1000 + seed)
    solver = (
        ExactNormalEquations()
        if solver_kind == "exact"
        else SketchPreconditionedCG(max_iter=q, generator=gen)
    )
    _sync(device)
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (c["m"], c["n"]),
        c["k"],
        n_iters=c["sweeps"],
        solver=solver,
        tol=0.0,
        truth=(u_star, s_star, v_star),
        generator=gen,
    )
    _sync(device)
    err = res.history["rel_error"]
    times = res.history["time"]
    return {
        "final_error": float(err[-1]),
        "time_s": float(times[-1]),
        "flops": float(res.history["flops"][-1]),
        "time_to_target": _time_to(err, times, c["target"]),
        "n_obs": float(vals.numel()),
        "monotone": float(all(b < a for a, b in itertools.pairwise(err))),
        "sweep": res.history["sweep"],
        "rel_error": [float(e) for e in err],
        "time": [float(t) for t in times],
    }


def run_softimpute(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    """SoftImpute baseline along a warm-started λ path (CPU, numpy).

    fancyimpute 0.7.0 (the library a user would pick) installs but fails on scikit-learn
    >= 1.8 (``check_array(force_all_finite=...)`` was removed), so the same algorithm is
    written here on scikit-learn's ``randomized_svd``.
    """
    c, si = config["r1"], config["softimpute"]
    problem = _r1_problem({**config, "dtype": "float64"}, seed, "cpu")
    u_star, s_star, v_star, rows, cols, vals = problem
    m, n, k = c["m"], c["n"], c["k"]
    mask = np.zeros((m, n), dtype=bool)
    mask[rows.numpy(), cols.numpy()] = True
    observed = np.zeros((m, n))
    observed[rows.numpy(), cols.numpy()] = vals.numpy()
    lam0 = 0.5 * float(np.linalg.norm(observed, 2))
    lambdas = [lam0 * 0.5**i for i in range(si["n_lambdas"])]
    errors: list[float] = []
    times: list[float] = []
    start = time.perf_counter()

    def record(us: np.ndarray, v: np.ndarray) -> None:
        errors.append(
            relative_error(torch.from_numpy(us), torch.from_numpy(v), u_star, s_star, v_star)
        )
        times.append(time.perf_counter() - start)

    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(torch.get_num_threads()):  # numpy BLAS obeys the run's threads
        soft_impute_path(
            observed, mask, lambdas, 2 * k, si["max_iters"], si["tol"], 1000 + seed, record
        )
    return {
        "final_error": float(errors[-1]),
        "time_s": float(times[-1]),
        "time_to_target": _time_to(errors, times, c["target"]),
        "lambda_step": [float(i + 1) for i in range(len(errors))],
        "rel_error_path": errors,
    }


def _max_curve_ratio(r: Results) -> float:
    """Worst over seeds and sweeps of error(sketch-pcg) / error(exact)."""
    worst = 0.0
    for seed in r.metrics["sketch-pcg"]:
        a = np.array(r.metrics["sketch-pcg"][seed]["rel_error"])
        b = np.array(r.metrics["exact"][seed]["rel_error"])
        length = min(len(a), len(b))
        worst = max(worst, float(np.max(a[:length] / b[:length])))
    return worst


def _softimpute_slower(r: Results) -> float:
    """Fraction of seeds where SoftImpute reaches the target later than sketch-PCG (or never)."""
    soft = r.values("softimpute", "time_to_target")
    fast = r.values("sketch-pcg", "time_to_target")
    return float(
        np.mean([(not math.isfinite(s)) or s > f for s, f in zip(soft, fast, strict=True)])
    )


#: arm → ``run(config, seed, device) -> metrics``: one trial per arm and seed.
METHODS: dict[str, Callable[[Mapping[str, Any], int, str], dict[str, Any]]] = {
    **{arm: _altmin_arm(arm) for arm in _ALTMIN_ARMS},
    "softimpute": run_softimpute,
    "scaling-k": run_scaling_k,
    "scaling-omega": run_scaling_omega,
    "digits": run_digits,
}

_STATEMENT = (
    "Alternating minimization with each least-squares update solved approximately by a "
    "sketching-based regression solver keeps the sample complexity and convergence of exact "
    "AltMin, and runs in nearly linear time Õ(|Ω|k) instead of Õ(|Ω|k²)."
)

CLAIMS = [
    Claim(
        name="sketch-tracks-exact",
        statement=_STATEMENT,
        description="max over seeds and sweeps of error(sketch-PCG q=2) / error(exact)",
        metric=_max_curve_ratio,
        op="<=",
        threshold=3.0,
    ),
    Claim(
        name="sketch-recovers",
        statement="Robust AltMin recovers the incoherent low-rank matrix (‖M − X‖_F ≤ ε).",
        description="worst-seed final relative error of sketch-PCG",
        metric=lambda r: r.max("sketch-pcg", "final_error"),
        op="<=",
        threshold={"smoke": 1e-8, "quick": 1e-8, "full": 1e-3},
    ),
    Claim(
        name="exact-recovers",
        statement="Exact AltMin (JNS13) recovers the matrix (reference).",
        description="worst-seed final relative error of exact AltMin",
        metric=lambda r: r.max("exact", "final_error"),
        op="<=",
        threshold={"smoke": 1e-9, "quick": 1e-9, "full": 1e-3},
    ),
    Claim(
        name="sketch-and-solve-converges",
        statement="Sketch-and-solve alone (no refinement) still converges, at a slower rate.",
        description="worst-seed final error of sketch-and-solve (q=0); monotone on every seed",
        metric=lambda r: (
            r.max("sketch-solve", "final_error")
            if r.min("sketch-solve", "monotone") == 1.0
            else math.inf
        ),
        op="<=",
        threshold=1e-3,
        scales=("quick", "full"),
    ),
    Claim(
        name="faster-than-softimpute",
        statement="Robust AltMin reaches relative error 1e-4 sooner than SoftImpute (or "
        "SoftImpute never does).",
        description="fraction of seeds where SoftImpute (optforge.repro.baselines) is slower "
        "or never reaches",
        metric=_softimpute_slower,
        op=">=",
        threshold=1.0,
        scales=("quick",),
    ),
    Claim(
        name="flops-linear-in-k",
        statement="Each sweep costs Õ(|Ω|k) for robust AltMin vs Õ(|Ω|k²) for exact AltMin.",
        description="log-log slope of counted sketch flops in k (k = 4..16), worst seed",
        metric=lambda r: r.max("scaling-k", "flop_slope_sketch"),
        op="<=",
        threshold=1.3,
    ),
    Claim(
        name="exact-flops-quadratic-in-k",
        statement="Exact AltMin forms |Ω| k×k outer products: Õ(|Ω|k²) per sweep.",
        description="log-log slope of counted exact flops in k (k = 4..16), best seed",
        metric=lambda r: r.min("scaling-k", "flop_slope_exact"),
        op=">=",
        threshold=1.8,
    ),
    Claim(
        name="wall-time-k64",
        statement="Each sweep costs Õ(|Ω|k) for robust AltMin vs Õ(|Ω|k²) for exact AltMin, so "
        "the sketch wins once k is large and |Ω_j| ≫ s: tested at k = 64 with |Ω_j| ≈ 8s "
        "(s = 4k = 256 sketch rows; quick: m = n = 4000, p = 0.5), where the flop counts "
        "predict a ≥ 4× win.",
        description="median over seeds of time(sketch sweep, q = 3) / time(optimised exact "
        "sweep) at k = 64, medians of interleaved rounds",
        metric=lambda r: r.median("scaling-k", "time_ratio_k64"),
        op="<=",
        threshold=1.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="wall-time-k16",
        statement="The sketch solver is not slower than exact AltMin by more than 1.2× at "
        "k = 16 (spec R2's bar; below the regime of the k = 64 claim, and CPU BLAS-3 favours "
        "the exact Gram).",
        description="median over seeds of time(sketch sweep) / time(optimised exact sweep) at "
        "k = 16",
        metric=lambda r: r.median("scaling-k", "time_ratio_k16"),
        op="<=",
        threshold=1.2,
        scales=("quick", "full"),
    ),
    Claim(
        name="near-linear-in-omega",
        statement="Robust AltMin runs in nearly linear time in |Ω|.",
        description="median over seeds of the log-log slope of time per sweep vs |Ω| (k = 8, "
        "sparse O(|Ω|k) backend, medians of interleaved rounds)",
        metric=lambda r: r.median("scaling-omega", "time_slope_omega"),
        op="<=",
        threshold=1.3,
        scales=("quick", "full"),
    ),
    Claim(
        name="near-linear-in-omega-lower",
        statement="Robust AltMin runs in nearly linear time in |Ω| (slope not sub-linear "
        "artefact).",
        description="median log-log slope of time per sweep vs |Ω| is at least 0.75",
        metric=lambda r: r.median("scaling-omega", "time_slope_omega"),
        op=">=",
        threshold=0.75,
        scales=("quick", "full"),
    ),
    Claim(
        name="omega-runs-reach-target",
        statement="All R3 runs reach relative error 1e-6 within 15 sweeps.",
        description="worst final relative error over sizes and seeds",
        metric=lambda r: r.max("scaling-omega", "max_final_error"),
        op="<=",
        threshold={"quick": 1e-6, "full": 1e-3},
        scales=("quick", "full"),
    ),
    Claim(
        name="digits-matches-exact",
        statement="On real data, approximate solves lose nothing against exact AltMin.",
        description="worst-seed held-out RMSE(robust) / RMSE(exact) on digits",
        metric=lambda r: r.max("digits", "ratio_robust_exact"),
        op="<=",
        threshold=1.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="digits-beats-mean",
        statement="Low-rank completion beats column-mean imputation on digits.",
        description="worst-seed held-out RMSE(robust) / RMSE(column mean)",
        metric=lambda r: r.max("digits", "ratio_robust_colmean"),
        op="<=",
        threshold=0.7,
        scales=("quick", "full"),
    ),
]

register(
    Reproduction(
        name="altmin-completion",
        title="Low Rank Matrix Completion via Robust Alternating Minimization in Nearly "
        "Linear Time",
        arxiv="2302.11068",
        spec="robust_altmin_completion.md",
        configs=CONFIGS,
        seeds={"smoke": 1, "quick": 3, "full": 3},
        seed_base=100,
        methods=METHODS,
        methods_by_scale={
            "smoke": ("exact", "sketch-pcg", "scaling-k"),
            # dense numpy SoftImpute at n = 5000 would dominate the GPU run; quick covers it
            "full": ("exact", "sketch-pcg", "sketch-solve", "scaling-k", "scaling-omega", "digits"),
        },
        claims=CLAIMS,
        plot_x="sweep",
        plot_y=("rel_error",),
        plot_logy=True,
        summary="Sketch-and-precondition AltMin matches exact AltMin's error sweep by sweep at "
        "O(|Ω|k) counted cost.",
    )
)
