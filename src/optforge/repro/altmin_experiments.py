"""The scaling and digits experiments of ``altmin-completion`` (R2, R3, R4).

Run by :mod:`optforge.repro.papers.altmin_completion` (which documents the set-up) as the arms
``scaling-k`` (:func:`run_scaling_k`), ``scaling-omega`` (:func:`run_scaling_omega`) and
``digits`` (:func:`run_digits`); each is ``run(config, seed, device) -> metrics``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from optforge.matrix.altmin import (
    ExactNormalEquations,
    SketchPreconditionedCG,
    relative_error,
    robust_altmin_complete,
)
from optforge.problems import make_incoherent_lowrank
from optforge.repro.baselines import SoftImpute
from optforge.repro.data import digits
from optforge.repro.timing import time_interleaved

__all__ = ["dtype_of", "run_digits", "run_scaling_k", "run_scaling_omega"]


def dtype_of(config: Mapping[str, Any]) -> torch.dtype:
    """The run's dtype (``config["dtype"]``, float64 by default)."""
    return getattr(torch, config.get("dtype", "float64"))


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _pattern(n: int, p: float, generator: torch.Generator, dtype: torch.dtype, device: str):
    """A Bernoulli(p) pattern of an n × n matrix with random values (for timing a sweep)."""
    mask = torch.rand(n, n, generator=generator, device=device) < p
    rows, cols = mask.nonzero().unbind(1)
    vals = torch.randn(rows.numel(), generator=generator, device=device, dtype=dtype)
    return rows, cols, vals


@contextmanager
def _one_thread(device: str) -> Iterator[None]:
    """Time the sweeps on one CPU thread, whatever ``--threads`` the run uses.

    The wall-time claims compare the cost of two algorithms (Õ(|Ω|k) vs Õ(|Ω|k²) per sweep);
    with more threads the exact solver's BLAS-3 Gram products parallelise better than the
    sketch's sparse products, so the ratio would depend on the run's thread count (measured at
    k = 64: 0.97 on one thread, 1.06 on two). One thread keeps the quantity the same in every run.
    """
    if device != "cpu":
        yield
        return
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _sweep(solver, u0: torch.Tensor, rows, cols, vals, n: int):
    """One AltMin sweep (V- then U-half-step) from ``u0``; returns the counted flops.

    The solver's patterns of both half-steps are built here, before any sweep, so that no
    timed sweep includes a build and no untimed sweep is needed to build them."""
    k = u0.shape[1]
    solver.prepare(rows, cols, vals, n, n, k)
    solver.prepare(cols, rows, vals, n, n, k)

    def sweep() -> float:
        v = torch.linalg.qr(solver(u0, rows, cols, vals, n)).Q
        flops = solver.last_flops
        solver(v, cols, rows, vals, n)
        return flops + solver.last_flops

    return sweep


def _recording(sweeps: Mapping[Any, Any]) -> tuple[dict[Any, Any], dict[Any, float]]:
    """The sweeps, each keeping the counted flops of its last call (the same every call)."""
    flops: dict[Any, float] = {}

    def keep(name: Any, sweep: Any) -> Any:
        def call() -> None:
            flops[name] = sweep()

        return call

    return {name: keep(name, sweep) for name, sweep in sweeps.items()}, flops


def run_scaling_k(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    """R2: one sweep per k at fixed |Ω|: analytic flops, and the median wall time of interleaved
    rounds of the optimised exact solver and the sketch solver (q = 3, the default)."""
    c = config["r2"]
    n, ks = c["n"], c["ks"]
    gen = torch.Generator(device=device).manual_seed(seed)
    rows, cols, vals = _pattern(n, c["p"], gen, dtype_of(config), device)
    out: dict[str, Any] = {"k": [float(k) for k in ks], "n_obs": float(vals.numel())}
    flops: dict[str, list[float]] = {"exact": [], "sketch": []}
    times: dict[str, list[float]] = {"exact": [], "sketch": []}
    # One exact solver for every k: its Ω-patterns depend on the pattern (and the backend), not
    # on k, so they are built once instead of once per k (the sketch solver's patterns carry a
    # CountSketch of size 4k drawn from the seed's generator: one solver per k). The patterns
    # are built by `_sweep` before the timed rounds, so no timed round includes a build; the
    # counted flops are those of the timed sweeps (issue #34: the untimed sweep that used to
    # build the patterns and count the flops is gone).
    exact = ExactNormalEquations()
    for k in ks:
        g = torch.Generator(device=device).manual_seed(1000 + seed)
        u0 = torch.linalg.qr(torch.randn(n, k, generator=g, device=device, dtype=vals.dtype)).Q
        sweeps, counted = _recording(
            {
                "exact": _sweep(exact, u0, rows, cols, vals, n),
                "sketch": _sweep(
                    SketchPreconditionedCG(max_iter=3, generator=g), u0, rows, cols, vals, n
                ),
            }
        )
        with _one_thread(device):
            medians = time_interleaved(sweeps, device, repeats=c["reps"], warmup=0)
        for name in sweeps:
            flops[name].append(counted[name])
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
            n, n, k, p=p, generator=gen, dtype=dtype_of(config), device=device
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
        sweeps[n] = _sweep(solver, u0, rows, cols, vals, n)  # builds the solver's patterns
    with _one_thread(device):
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
    vals = torch.from_numpy(x[obs]).to(device, dtype_of(config))
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
