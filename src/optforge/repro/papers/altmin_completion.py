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

Each seed draws the matrix from ``seed`` and the algorithm's randomness from ``1000 + seed``; one
experiment per seed runs the arms, and the three AltMin arms of R1 share the seed's matrix.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Mapping, Sequence
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
from optforge.repro.baselines import SoftImpute, soft_impute_path
from optforge.repro.data import digits
from optforge.repro.registry import Claim, Reproduction, Results, register
from optforge.repro.timing import time_interleaved

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

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
    """The arms on one seed; the AltMin arms of R1 share the seed's matrix."""
    out: dict[str, dict[str, Any]] = {}
    problem: tuple | None = None
    for arm in arms:
        seed_everything(seed)
        if arm in _ALTMIN_ARMS:
            if problem is None:
                problem = _r1_problem(config, seed, device)
            out[arm] = _run_altmin(config, seed, device, problem, *_ALTMIN_ARMS[arm])
        else:
            out[arm] = _ARM_RUNS[arm](config, seed, device)
    return out


def _dtype(config: Mapping[str, Any]) -> torch.dtype:
    return getattr(torch, config.get("dtype", "float64"))


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
        dtype=_dtype(config),
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


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _pattern(n: int, p: float, generator: torch.Generator, dtype: torch.dtype, device: str):
    """A Bernoulli(p) pattern of an n × n matrix with random values (for timing a sweep)."""
    mask = torch.rand(n, n, generator=generator, device=device) < p
    rows, cols = mask.nonzero().unbind(1)
    vals = torch.randn(rows.numel(), generator=generator, device=device, dtype=dtype)
    return rows, cols, vals


def _sweep(solver, u0: torch.Tensor, rows, cols, vals, n: int):
    """One AltMin sweep (V- then U-half-step) from ``u0``; returns the counted flops."""

    def sweep() -> float:
        v = torch.linalg.qr(solver(u0, rows, cols, vals, n)).Q
        flops = solver.last_flops
        solver(v, cols, rows, vals, n)
        return flops + solver.last_flops

    return sweep


def run_scaling_k(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    """R2: one sweep per k at fixed |Ω|: analytic flops, and the median wall time of interleaved
    rounds of the optimised exact solver and the sketch solver (q = 3, the default)."""
    c = config["r2"]
    n, ks = c["n"], c["ks"]
    gen = torch.Generator(device=device).manual_seed(seed)
    rows, cols, vals = _pattern(n, c["p"], gen, _dtype(config), device)
    out: dict[str, Any] = {"k": [float(k) for k in ks], "n_obs": float(vals.numel())}
    flops: dict[str, list[float]] = {"exact": [], "sketch": []}
    times: dict[str, list[float]] = {"exact": [], "sketch": []}
    for k in ks:
        g = torch.Generator(device=device).manual_seed(1000 + seed)
        u0 = torch.linalg.qr(torch.randn(n, k, generator=g, device=device, dtype=vals.dtype)).Q
        sweeps = {
            "exact": _sweep(ExactNormalEquations(), u0, rows, cols, vals, n),
            "sketch": _sweep(
                SketchPreconditionedCG(max_iter=3, generator=g), u0, rows, cols, vals, n
            ),
        }
        for name, sweep in sweeps.items():
            flops[name].append(sweep())  # also builds the solver's pattern (once per fit)
        medians = time_interleaved(sweeps, device, repeats=c["reps"], warmup=0)
        for name in sweeps:
            times[name].append(medians[name])
    i4, i16 = ks.index(4), ks.index(16)
    for name in ("exact", "sketch"):
        out[f"flop_slope_{name}"] = _slope(ks[i4 : i16 + 1], flops[name][i4 : i16 + 1])
        out[f"time_slope_{name}"] = _slope(ks[i4 : i16 + 1], times[name][i4 : i16 + 1])
        out[f"flops_{name}"] = flops[name]
        out[f"time_{name}"] = times[name]
    out["time_ratio"] = [a / b for a, b in zip(times["sketch"], times["exact"], strict=True)]
    out["time_ratio_k16"] = out["time_ratio"][i16]
    out["flop_ratio_k16"] = flops["sketch"][i16] / flops["exact"][i16]
    if 64 in ks:
        out["time_ratio_k64"] = out["time_ratio"][ks.index(64)]
        out["flop_ratio_k64"] = flops["sketch"][ks.index(64)] / flops["exact"][ks.index(64)]
        out["obs_per_col_over_s_k64"] = float(vals.numel()) / n / (4 * 64)
    return out


def run_scaling_omega(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    """R3: time per sweep of the O(|Ω|k) implementation (sketch solver, sparse backend) vs |Ω|
    at fixed k, as the median of interleaved rounds over the sizes (so drift of a shared machine
    hits every size alike), and sweeps to the target error of full runs."""
    c = config["r3"]
    k = c["k"]
    n_obs, sweeps_needed, final, sweeps = [], [], [], {}
    for i, n in enumerate(c["ns"]):
        p = min(1.0, 4 * k * math.log(n) / n)
        gen = torch.Generator(device=device).manual_seed(seed * 100 + i)
        u_star, s_star, v_star, rows, cols, vals = make_incoherent_lowrank(
            n, n, k, p=p, generator=gen, dtype=_dtype(config), device=device
        )
        truth = (u_star, s_star, v_star)
        errors: list[float] = []

        def stop(sweep: int, u_hat: torch.Tensor, v: torch.Tensor, errors=errors, truth=truth):
            errors.append(relative_error(u_hat, v, *truth))
            return errors[-1] <= c["target"]

        g = torch.Generator(device=device).manual_seed(1000 + seed)
        res = robust_altmin_complete(
            rows,
            cols,
            vals,
            (n, n),
            k,
            n_iters=c["max_sweeps"],
            solver=SketchPreconditionedCG(generator=g, backend="sparse"),
            tol=0.0,
            generator=g,
            callback=stop,
        )
        n_obs.append(float(vals.numel()))
        sweeps_needed.append(float(res.n_iters))
        final.append(float(errors[-1]))
        u0 = torch.linalg.qr(torch.randn(n, k, generator=g, device=device, dtype=vals.dtype)).Q
        solver = SketchPreconditionedCG(generator=g, backend="sparse")
        sweeps[n] = _sweep(solver, u0, rows, cols, vals, n)
        sweeps[n]()  # builds the solver's patterns (once per fit)
    medians = time_interleaved(sweeps, device, repeats=c["reps"], warmup=0)
    per_sweep = [medians[n] for n in c["ns"]]
    return {
        "time_slope_omega": _slope(n_obs, per_sweep),
        "max_final_error": max(final),
        "n_obs": n_obs,
        "time_per_sweep": per_sweep,
        "sweeps_to_target": sweeps_needed,
    }


def run_digits(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    """R4: complete the digits matrix with half its entries hidden; held-out RMSE of robust and
    exact AltMin, column means, ``KNNImputer``, ``IterativeImputer`` and SoftImpute."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    c = config["r4"]
    data = digits(pixels="raw")[0].numpy()
    rng = np.random.default_rng(seed)
    hide = rng.random(data.shape) < c["hide"]
    x = np.where(hide, np.nan, data)
    keep_cols = ~np.all(hide, axis=0) & (np.nanstd(x, axis=0) > 0)  # constant pixels are trivial
    keep_rows = ~np.all(hide[:, keep_cols], axis=1)
    x, data, hide = (
        x[keep_rows][:, keep_cols],
        data[keep_rows][:, keep_cols],
        hide[keep_rows][:, keep_cols],
    )
    obs = ~hide
    idx = torch.from_numpy(np.argwhere(obs)).to(device)
    rows, cols = idx[:, 0], idx[:, 1]
    vals = torch.from_numpy(x[obs]).to(device, _dtype(config))
    # The factor being held fixed is orthonormal, so E[A_jᵀA_j] = p·I: the ridge is set relative
    # to that scale (1 % of it). The spec's 1e-2·mean(v²) is in data units and, against
    # orthonormal factors, shrinks the fit so much that it loses to column means.
    ridge = c["ridge_scale"] * float(obs.mean())
    truth_hidden = data[hide]
    out: dict[str, Any] = {}
    for name in ("robust", "exact"):
        g = torch.Generator(device=device).manual_seed(1000 + seed)
        solver = SketchPreconditionedCG(generator=g) if name == "robust" else ExactNormalEquations()
        res = robust_altmin_complete(
            rows,
            cols,
            vals,
            x.shape,
            c["k"],
            n_iters=c["sweeps"],
            solver=solver,
            ridge=ridge,
            generator=g,
        )
        pred = res.dense().cpu().double().numpy()[hide]
        out[f"rmse_{name}"] = float(np.sqrt(np.mean((pred - truth_hidden) ** 2)))
    # the imputers a user would reach for, on the same hidden entries
    imputers = {
        "colmean": SimpleImputer(strategy="mean"),
        "knn": KNNImputer(n_neighbors=5),
        "iterative": IterativeImputer(max_iter=10, random_state=1000 + seed),
        "softimpute": SoftImpute(max_rank=2 * c["k"], random_state=1000 + seed),
    }
    for name, imputer in imputers.items():
        with warnings.catch_warnings():  # IterativeImputer warns when it stops at max_iter
            warnings.simplefilter("ignore", ConvergenceWarning)
            filled = imputer.fit_transform(x)[hide]
        out[f"rmse_{name}"] = float(np.sqrt(np.mean((filled - truth_hidden) ** 2)))
    out["ratio_robust_exact"] = out["rmse_robust"] / out["rmse_exact"]
    for name in imputers:
        out[f"ratio_robust_{name}"] = out["rmse_robust"] / out[f"rmse_{name}"]
    return out


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


_ARM_RUNS = {
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
        methods=list(ARMS),
        experiment=run,
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
