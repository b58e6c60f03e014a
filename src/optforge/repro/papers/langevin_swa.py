"""Reproduction ``langevin-swa``: averaged Langevin iterates recover a planted direction.

Paper: "Improved high-dimensional estimation with Langevin dynamics and stochastic weight
averaging", ICLR 2026, arXiv:2603.06028.

Set-up: spiked tensor PCA k = 3, d = 50, n = 700; spherical Langevin h = 0.05, β = 60, 2000
steps, average over steps ≥ 1000; the averaged iterate and the last iterate come from the
**same** run (one arm reports both). Baseline: plain gradient descent on the sphere with
``torch.optim.SGD`` (renormalised after every step), the projected-GD a user would write, from
the same initial vector. The single-index model (He₃ link, correlation loss) is the second
problem. ``full`` (GPU): the sample-size sweep n = d^a for several d, where the averaged iterate
should succeed from a smaller exponent a than GD / the last iterate.

Seeds: the problem is drawn with ``seed`` and the chain (initialisation + noise) with
``seed + CHAIN_SEED_OFFSET``, so the chain's first draw is not θ* itself. One experiment per seed
draws each problem (and the sweep's problems) once; its Langevin and GD arms share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optforge._core import make_generator, seed_everything
from optforge.optim import Langevin, langevin_recover
from optforge.problems import overlap, single_index, tensor_pca
from optforge.repro import Claim, Reproduction, register

__all__ = ["ARMS", "CHAIN_SEED_OFFSET", "CONFIGS", "SUCCESS", "run"]

CHAIN_SEED_OFFSET = 1_000_003
SUCCESS = 0.7

_TPCA = {"d": 50, "k": 3, "n": 700, "lr": 0.05, "beta": 60.0, "steps": 2000, "burn_in": 0.5}
_SI = {"d": 50, "n": 6000, "link": "he3", "lr": 0.05, "beta": 60.0, "steps": 2000, "burn_in": 0.5}

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "tpca": {**_TPCA, "steps": 1000},
        "si": {**_SI, "steps": 1000},
        "trace_every": 100,
        "dtype": "float32",
    },
    "quick": {"tpca": _TPCA, "si": _SI, "trace_every": 50, "dtype": "float32"},
    "full": {
        "tpca": _TPCA,
        "si": _SI,
        "trace_every": 50,
        "dtype": "float32",
        # sample-size sweep, tensor PCA k = 3: n = d**a, β = beta_per_d * d (keeps the
        # injected-noise displacement sqrt(2h(d-1)/β) fixed as d grows)
        "sweep": {
            "k": 3,
            "ds": [50, 100, 200],
            "exponents": [1.25, 1.5, 1.75, 2.0],
            "beta_per_d": 1.2,
            "lr": 0.05,
            "steps": 3000,
            "burn_in": 0.5,
        },
    },
}


ARMS = ("tpca/langevin", "tpca/sgd", "si/langevin", "si/sgd")


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: each problem is drawn once and shared by its Langevin and GD arms."""
    dtype = _dtype(config)
    problems = {
        kind: _problem(kind, config, seed, device)
        for kind in dict.fromkeys(arm.split("/")[0] for arm in arms)
    }
    sweep = config.get("sweep") if "tpca" in problems else None
    sweep_problems = _sweep_problems(sweep, seed, device, dtype) if sweep else None
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        kind, method = arm.split("/")
        seed_everything(seed)
        langevin = method == "langevin"
        metrics = (_langevin if langevin else _sgd)(kind, problems[kind], config, seed)
        if sweep and kind == "tpca":
            metrics.update(_sweep(sweep, sweep_problems, seed, device, dtype, langevin=langevin))
        out[arm] = metrics
    return out


def _dtype(config: Mapping[str, Any]) -> torch.dtype:
    return getattr(torch, str(config.get("dtype", "float32")))


def _problem(kind: str, config: Mapping[str, Any], seed: int, device: str):
    c = config[kind]
    if kind == "tpca":
        return tensor_pca(c["d"], c["k"], c["n"], seed=seed, device=device, dtype=_dtype(config))
    return single_index(c["d"], c["n"], c["link"], seed=seed, device=device, dtype=_dtype(config))


def _init(problem, seed: int) -> torch.Tensor:
    """The uniform initial vector ``langevin_recover`` draws first from the chain's generator."""
    star = problem.theta_star
    gen = make_generator(seed + CHAIN_SEED_OFFSET, star.device)
    v = torch.randn(star.shape, generator=gen, device=star.device, dtype=star.dtype)
    return v / v.norm()


def _langevin(kind: str, problem, config: Mapping[str, Any], seed: int) -> dict[str, Any]:
    c = config[kind]
    out = langevin_recover(
        problem,
        beta=c["beta"],
        lr=c["lr"],
        steps=c["steps"],
        burn_in=c["burn_in"],
        seed=seed + CHAIN_SEED_OFFSET,
        trace_every=config["trace_every"],
    )
    return {
        "overlap_avg": out["overlap_avg"],
        "overlap_last": out["overlap_last"],
        "success_avg": float(out["overlap_avg"] > SUCCESS),
        "success_last": float(out["overlap_last"] > SUCCESS),
        "step": out["trace"]["step"],
        f"{kind}_overlap_last": out["trace"]["overlap_last"],
        f"{kind}_overlap_avg": out["trace"]["overlap_avg"],
    }


def _sgd(kind: str, problem, config: Mapping[str, Any], seed: int) -> dict[str, Any]:
    c = config[kind]
    theta = _init(problem, seed).requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=c["lr"])
    steps, trace = [], []
    for t in range(1, c["steps"] + 1):
        theta.grad = problem.grad(theta.detach())
        opt.step()
        with torch.no_grad():
            theta /= theta.norm()
        if t % config["trace_every"] == 0:
            steps.append(float(t))
            trace.append(overlap(theta, problem.theta_star))
    final = overlap(theta, problem.theta_star)
    return {
        "overlap_last": final,
        "success_last": float(final > SUCCESS),
        "step": steps,
        f"{kind}_overlap_last": trace,
    }


def _sweep_problems(
    sweep: Mapping[str, Any], seed: int, device: str, dtype: torch.dtype
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per d of the sweep: θ* and Sym(Z) of one tensor PCA problem drawn with ``seed``."""
    problems = {}
    for d in sweep["ds"]:
        base = tensor_pca(d, sweep["k"], 1.0, seed=seed, device=device, dtype=dtype)
        signal = base.theta_star
        # base.sym = Sym(θ*^{⊗k}) + Sym(Z): remove the signal part to get Sym(Z)
        problems[d] = signal, base.sym - _outer_power(signal, sweep["k"]).reshape(d, -1)
    return problems


def _sweep(
    sweep: Mapping[str, Any],
    problems: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
    seed: int,
    device: str,
    dtype: torch.dtype,
    *,
    langevin: bool,
) -> dict[str, float]:
    """Success (overlap > 0.7) for every (d, n = d**a): one problem per d whose noise tensor Z
    is shared by all n (common random numbers), the chains for the different n run together as
    the rows of one ``(len(exponents), d)`` parameter (``sphere="rows"``)."""
    out: dict[str, float] = {}
    exps = list(sweep["exponents"])
    for d in sweep["ds"]:
        signal, sym_z = problems[d]
        # 1/sqrt(n) for each row (chain), n = d**a
        scale = torch.tensor([d ** (-a / 2) for a in exps], device=device, dtype=dtype)[:, None]

        def grad(theta: torch.Tensor, signal=signal, sym_z=sym_z, scale=scale) -> torch.Tensor:
            """-k [<θ,θ*>^{k-1} θ* + Sym(Z)(·,θ,…,θ)/√n], rows = chains (one matmul)."""
            k = sweep["k"]
            kron = theta
            for _ in range(k - 2):
                kron = (kron.unsqueeze(-1) * theta.unsqueeze(-2)).flatten(-2)
            g_signal = (theta @ signal)[:, None] ** (k - 1) * signal
            return -k * (g_signal + scale * (kron @ sym_z.T))

        gen = make_generator(seed + CHAIN_SEED_OFFSET, device)
        start = torch.randn(d, generator=gen, device=device, dtype=dtype)
        theta = (start / start.norm()).expand(len(exps), d).clone().requires_grad_(True)
        steps = int(sweep["steps"])
        if langevin:
            beta = sweep["beta_per_d"] * d
            opt: torch.optim.Optimizer = Langevin(
                [theta], lr=sweep["lr"], beta=beta, sphere="rows", generator=gen
            )
            burn = int(sweep["burn_in"] * steps)
            total = torch.zeros(len(exps), d, device=device, dtype=torch.float64)
        else:
            opt = torch.optim.SGD([theta], lr=sweep["lr"])
        for t in range(steps):
            theta.grad = grad(theta.detach())
            opt.step()
            if not langevin:
                with torch.no_grad():
                    theta /= theta.norm(dim=1, keepdim=True)
            elif t >= burn:
                total += theta.detach()
        last = overlap(theta, signal).tolist()
        for a, value in zip(exps, last, strict=True):
            key = f"d{d}_a{a:g}"
            out[f"sweep_last_{key}"] = float(value > SUCCESS)
        if langevin:
            avg = overlap(total, signal.double()).tolist()
            for a, value in zip(exps, avg, strict=True):
                out[f"sweep_avg_d{d}_a{a:g}"] = float(value > SUCCESS)
    return out


def _outer_power(v: torch.Tensor, k: int) -> torch.Tensor:
    out = v
    for _ in range(k - 1):
        out = out.unsqueeze(-1) * v
    return out


def _count(r, method: str, metric: str) -> float:
    return float(np.sum(r.values(method, metric)))


def _threshold_exponent(r, method: str, prefix: str, d: int, exps: list[float]) -> float:
    """Smallest exponent a at which ≥ 75% of seeds succeed (inf if none)."""
    for a in exps:
        if r.mean(method, f"{prefix}_d{d}_a{a:g}") >= 0.75:
            return a
    return math.inf


_SWEEP = CONFIGS["full"]["sweep"]
_D_MAX = max(_SWEEP["ds"])

register(
    Reproduction(
        name="langevin-swa",
        title="Improved high-dimensional estimation with Langevin dynamics and stochastic "
        "weight averaging",
        arxiv="2603.06028",
        spec="langevin_swa.md",
        configs=CONFIGS,
        seeds={"smoke": 2, "quick": 16, "full": 16},
        seed_base=100,
        methods=list(ARMS),
        experiment=run,
        plot_x="step",
        plot_y=("tpca_overlap_last", "tpca_overlap_avg", "si_overlap_last", "si_overlap_avg"),
        summary="Tensor PCA (k=3, d=50, n=700) and a He3 single-index model (d=50, n=3000): "
        "the time average of a hot spherical Langevin chain vs its last iterate vs projected GD "
        "(torch.optim.SGD).",
        claims=[
            Claim(
                name="avg-iterate-recovers",
                quantity="fraction of seeds with overlap(average iterate, θ*) ≥ 0.8, tensor PCA",
                description=(
                    "share of seeds on which the averaged Langevin iterate reaches overlap ≥ 0.8 "
                    "with θ*"
                ),
                statement="Langevin dynamics with the average iterate recovers θ* (overlap > 0.7 "
                "on nearly every seed; spec §6 criterion 1: ≥ 15/16 seeds with overlap ≥ 0.8).",
                metric=lambda r: r.fraction("tpca/langevin", "overlap_avg", lambda v: v >= 0.8),
                op=">=",
                threshold={"smoke": 1.0, "quick": 15 / 16, "full": 15 / 16},
            ),
            Claim(
                name="avg-beats-last-iterate",
                quantity=(
                    "fraction of seeds with overlap(average) > overlap(last iterate), tensor PCA"
                ),
                description=(
                    "share of seeds on which the averaged iterate's overlap exceeds the last "
                    "iterate's, same run"
                ),
                statement="The average iterate beats the last iterate of the same run "
                "(fraction of seeds where overlap_avg > overlap_last; spec: ≥ 14/16).",
                metric=lambda r: float(
                    np.mean(
                        r.values("tpca/langevin", "overlap_avg")
                        > r.values("tpca/langevin", "overlap_last")
                    )
                ),
                op=">=",
                threshold={"smoke": 1.0, "quick": 14 / 16, "full": 14 / 16},
            ),
            Claim(
                name="avg-median-gain",
                quantity="overlap with θ* (cosine, 0–1), median over seeds, average − last iterate",
                description=(
                    "median over seeds of the averaged iterate's overlap minus median of the last "
                    "iterate's, tensor PCA"
                ),
                statement="median(avg) − median(last) ≥ 0.1 (spec §6 criterion 2).",
                metric=lambda r: (
                    r.median("tpca/langevin", "overlap_avg")
                    - r.median("tpca/langevin", "overlap_last")
                ),
                op=">=",
                threshold=0.1,
            ),
            Claim(
                name="avg-more-successes-than-last",
                quantity="successes (seeds with overlap > 0.7), average − last iterate",
                description=(
                    "count of successful seeds of the averaged iterate minus count for the last "
                    "iterate, tensor PCA"
                ),
                statement="The averaged iterate beats the last iterate's success count "
                "(overlap > 0.7).",
                metric=lambda r: (
                    _count(r, "tpca/langevin", "success_avg")
                    - _count(r, "tpca/langevin", "success_last")
                ),
                op=">",
                threshold=0.0,
                scales=("quick", "full"),
            ),
            Claim(
                name="avg-more-successes-than-gd",
                quantity="successes (seeds with overlap > 0.7), averaged Langevin − GD",
                description=(
                    "count of successful seeds of averaged Langevin minus count for GD's last "
                    "iterate, tensor PCA"
                ),
                statement="The successes of GD are strictly fewer than those of the averaged "
                "Langevin at the same n (spec §6 criterion 3).",
                metric=lambda r: (
                    _count(r, "tpca/langevin", "success_avg")
                    - _count(r, "tpca/sgd", "success_last")
                ),
                op=">",
                threshold=0.0,
                scales=("quick", "full"),
            ),
            Claim(
                name="single-index-avg-recovers",
                quantity="fraction of seeds with overlap(average iterate, θ*) > 0.7, single-index",
                description=(
                    "share of seeds on which the averaged Langevin iterate reaches overlap > 0.7 "
                    "in the single-index model"
                ),
                statement="The average iterate also recovers θ* in the single-index model "
                "(fraction of seeds with overlap > 0.7).",
                metric=lambda r: r.fraction("si/langevin", "overlap_avg", lambda v: v > SUCCESS),
                op=">=",
                threshold={"smoke": 1.0, "quick": 0.9, "full": 0.9},
            ),
            Claim(
                name="single-index-avg-beats-last",
                quantity=(
                    "fraction of seeds with overlap(average) > overlap(last iterate), single-index"
                ),
                description=(
                    "share of seeds on which the averaged iterate's overlap exceeds the last "
                    "iterate's, single-index model"
                ),
                statement="In the single-index model too, the average iterate beats the last "
                "iterate of the same run (fraction of seeds).",
                metric=lambda r: float(
                    np.mean(
                        r.values("si/langevin", "overlap_avg")
                        > r.values("si/langevin", "overlap_last")
                    )
                ),
                op=">=",
                threshold={"smoke": 1.0, "quick": 14 / 16, "full": 14 / 16},
            ),
            Claim(
                name="sample-complexity-gap",
                quantity=(
                    "sample-size exponent a (n = d^a) for ≥ 75% success, GD − averaged Langevin"
                ),
                description=(
                    "at the largest d, smallest swept exponent with ≥ 75% successful seeds for GD "
                    "minus that for the averaged iterate"
                ),
                statement="Averaged Langevin needs n ≳ d^{k*/2} samples where the last iterate "
                f"and GD need more: at d = {_D_MAX}, the smallest exponent a (n = d^a) with "
                "≥ 75% success for GD minus that for the averaged iterate.",
                metric=lambda r: (
                    _threshold_exponent(r, "tpca/sgd", "sweep_last", _D_MAX, _SWEEP["exponents"])
                    - _threshold_exponent(
                        r, "tpca/langevin", "sweep_avg", _D_MAX, _SWEEP["exponents"]
                    )
                ),
                op=">",
                threshold=0.0,
                scales=("full",),
            ),
        ],
    )
)
