"""Reproduction ``gns``: gradient-regularized Newton with approximate Hessians keeps a fast global
(linear) rate.

Problems (float64, generated once per seed by one experiment; every arm of a seed sees the same
data, start and ``f*``):

* ``lse`` (R1) — log-sum-exp ``f(x) = μ log Σ exp((Ax − b)/μ)``, ``A, b ~ U[−1, 1]``, ``A`` shifted
  by ``1·∇f₀(0)ᵀ`` so ``x* = 0`` and ``f* = f(0)``; ``x0 = 1``; metric ``B = AᵀA/m + 1e-8·I``.
  Arms: GNS with the exact Hessian and with the weighted Gauss–Newton approximation, the GNS
  gradient method (``H ≡ 0``) in metric ``B`` and Euclidean, ``torch.optim.SGD`` with step
  ``1/L``, ``torch.optim.LBFGS`` (strong Wolfe) and scipy's exact-Hessian trust-region Newton
  (``scipy.optimize.minimize(method="trust-exact")``). Target: ``f − f* ≤ 1e-8``.
* ``logreg`` (R2) — ℓ2-regularised logistic regression (1e-3) on ``N × d`` Gaussian features with
  column scales ``10^linspace(−1.5, 1.5)``, labels from a logistic teacher; ``f*`` from exact GNS
  run to ``‖∇f‖ ≤ 1e-13``. Arms: GNS exact, lazy (exact Hessian every 5 iterations), subsampled
  (Hessian on a fixed 20 % of the rows), Böhning's bound ``XᵀX/(4N) + reg·I``; SGD(1/L), LBFGS,
  scipy trust-exact. Target: ``f − f* ≤ 1e-10``.
* ``cheb`` (R3, reported) — Nesterov's Chebyshev–Rosenbrock ``f = (1/p)‖u‖^p``,
  ``u₁ = (1 − x₁)/2``, ``uᵢ = xᵢ − 2x_{i−1}² + 1``, ``x0 ~ U[0, 1]^n``, ``p ∈ {2, 4}``: GNS with
  the Gauss–Newton-type approximation vs exact GNS vs the GNS gradient method.

Curves are per outer iteration (``step``); ``*_nfev`` and ``*_time`` curves give the number of
function+gradient evaluations and seconds at each iteration (for per-evaluation and per-second
plots). Gaps are floored at 1e-17 for the log plots. "Not reached" is recorded as ``inf``.
Gradient descent with Nesterov's backtracking is the GNS gradient method arm; ``torch.optim.SGD``
with step ``1/L`` (``L`` a valid smoothness bound) is the library baseline.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optforge._core import seed_everything
from optforge.optim import gns_minimize
from optforge.optim.hessian_approx import (
    FixedHessian,
    GaussNewton,
    LazyHessian,
    SubsampledHessian,
    WeightedGaussNewtonLSE,
)
from optforge.repro.registry import Claim, Reproduction, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

DT = torch.float64
FLOOR = 1e-17

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "lse_m": 60, "lse_n": 30, "lse_mu": 0.25, "lse_tol": 1e-8, "lse_maxiter": 300,
        "lr_n": 400, "lr_d": 15, "lr_reg": 1e-3, "lr_tol": 1e-10, "lr_maxiter": 300,
        "lr_gd_iters": 200, "cheb_n": 5, "cheb_maxiter": 20, "dtype": "float64",
    },
    "quick": {
        "lse_m": 200, "lse_n": 100, "lse_mu": 0.25, "lse_tol": 1e-8, "lse_maxiter": 2000,
        "lr_n": 2000, "lr_d": 50, "lr_reg": 1e-3, "lr_tol": 1e-10, "lr_maxiter": 300,
        "lr_gd_iters": 2000, "cheb_n": 20, "cheb_maxiter": 300, "dtype": "float64",
    },
    "full": {
        "lse_m": 1000, "lse_n": 1000, "lse_mu": 0.25, "lse_tol": 1e-8, "lse_maxiter": 4000,
        "lr_n": 20000, "lr_d": 500, "lr_reg": 1e-3, "lr_tol": 1e-10, "lr_maxiter": 300,
        "lr_gd_iters": 4000, "cheb_n": 50, "cheb_maxiter": 1000, "dtype": "float64",
    },
}  # fmt: skip

_KINDS = {
    "lse": ("gns-exact", "gns-wgn", "gns-gd-B", "gns-gd", "sgd", "lbfgs", "newton-scipy"),
    "logreg": (
        "gns-exact",
        "gns-lazy5",
        "gns-sub20",
        "gns-bohning",
        "sgd",
        "lbfgs",
        "newton-scipy",
    ),
    "cheb": ("gns-gn", "gns-exact", "gns-gd"),
}
ARMS = tuple(f"{problem}/{kind}" for problem, kinds in _KINDS.items() for kind in kinds)


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: each problem the arms need is built once (logreg's ``f*`` included)."""
    problems: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        name, kind = arm.split("/")
        if name not in problems:
            problems[name] = _PROBLEMS[name](config, seed, device)
        seed_everything(seed)
        out[arm] = _RUNS[name](kind, problems[name], config, seed)
    return out


# ---------------------------------------------------------------------------------------------
# Problems


def _lse(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    m, n, mu = config["lse_m"], config["lse_n"], config["lse_mu"]
    gen = torch.Generator().manual_seed(seed)
    A = (2 * torch.rand(m, n, generator=gen, dtype=DT) - 1).to(device)
    b = (2 * torch.rand(m, generator=gen, dtype=DT) - 1).to(device)
    zero = torch.zeros(n, dtype=DT, device=device)
    g0 = torch.func.grad(lambda x: mu * torch.logsumexp((A @ x - b) / mu, 0))(zero)
    A = A - g0[None, :]

    def f(x: Tensor) -> Tensor:
        return mu * torch.logsumexp((A @ x - b) / mu, 0)

    metric = A.T @ A / m + 1e-8 * torch.eye(n, dtype=DT, device=device)
    smooth = float((A**2).sum(1).max()) / mu  # ∇²f ⪯ (1/μ) max‖aᵢ‖² I
    return {"f": f, "x0": torch.ones(n, dtype=DT, device=device), "f_star": float(f(zero)),
            "A": A, "b": b, "mu": mu, "metric": metric, "L": smooth}  # fmt: skip


def _logreg(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    n, d, reg = config["lr_n"], config["lr_d"], config["lr_reg"]
    gen = torch.Generator().manual_seed(seed)
    scales = 10 ** torch.linspace(-1.5, 1.5, d, dtype=DT)
    X = torch.randn(n, d, generator=gen, dtype=DT) * scales
    w_true = torch.randn(d, generator=gen, dtype=DT) / scales / math.sqrt(d) * 2
    prob = torch.sigmoid(X @ w_true)
    y = torch.where(torch.rand(n, generator=gen, dtype=DT) < prob, 1.0, -1.0).to(DT)
    X, y = X.to(device), y.to(device)

    def per_example(w: Tensor, idx: Tensor | None = None) -> Tensor:
        Xi, yi = (X, y) if idx is None else (X[idx], y[idx])
        return torch.nn.functional.softplus(-yi * (Xi @ w)) + 0.5 * reg * (w @ w)

    def f(w: Tensor) -> Tensor:
        return per_example(w).mean()

    x0 = torch.zeros(d, dtype=DT, device=device)
    ref = gns_minimize(f, x0, hessian="exact", gtol=1e-13, maxiter=200)
    eye = torch.eye(d, dtype=DT, device=device)
    bohning = X.T @ X / (4 * n) + reg * eye
    smooth = float(torch.linalg.eigvalsh(bohning).max())
    return {"f": f, "x0": x0, "f_star": float(ref.fun), "per_example": per_example, "n": n,
            "bohning": bohning, "L": smooth}  # fmt: skip


def _cheb(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {"x0": torch.rand(config["cheb_n"], generator=gen, dtype=DT).to(device)}


def _cheb_residuals(x: Tensor) -> Tensor:
    return torch.cat([(1 - x[:1]) / 2, x[1:] - 2 * x[:-1] ** 2 + 1])


# ---------------------------------------------------------------------------------------------
# Runners


def _first_below(values: list[float], tol: float) -> float:
    for i, v in enumerate(values):
        if v <= tol:
            return float(i)
    return math.inf


def _worst_rate(gaps: list[float], tol: float, start: int = 5) -> float:
    """Smallest q with gap_k <= gap_start · q^(k − start) for all k until the target."""
    if len(gaps) <= start + 1 or gaps[start] <= tol:
        return 0.0
    worst = 0.0
    for k in range(start + 1, len(gaps)):
        ratio = max(gaps[k], 0.0) / gaps[start]
        worst = max(worst, ratio ** (1.0 / (k - start)))
        if gaps[k] <= tol:
            break
    return worst


def _metrics(prefix: str, gaps: list[float], nfev: list[float], times: list[float],
             tol: float) -> dict[str, Any]:  # fmt: skip
    it = _first_below(gaps, tol)
    reached = math.isfinite(it)
    return {
        "iters_to_tol": it,
        "evals_to_tol": float(nfev[int(it)]) if reached else math.inf,
        "time_to_tol": float(times[int(it)]) if reached else math.inf,
        "final_gap": float(max(gaps[-1], 0.0)),
        "worst_rate": _worst_rate(gaps, tol),
        "monotone": float(all(b <= a + 1e-15 for a, b in itertools.pairwise(gaps))),
        "step": [float(i) for i in range(len(gaps))],
        f"{prefix}_gap": [max(g, FLOOR) for g in gaps],
        f"{prefix}_nfev": [float(v) for v in nfev],
        f"{prefix}_time": [float(t) for t in times],
    }


def _gns(
    prefix: str, problem: dict[str, Any], tol: float, maxiter: int, **kw: Any
) -> dict[str, Any]:
    res = gns_minimize(problem["f"], problem["x0"], ftol=tol, f_star=problem["f_star"],
                       maxiter=maxiter, **kw)  # fmt: skip
    gaps = [f - problem["f_star"] for f in res.history["f"]]
    out = _metrics(prefix, gaps, res.history["nfev"], res.history["time"], tol)
    out["n_exhausted"] = float(res.n_exhausted)
    out["mean_trials"] = float(np.mean(res.history["trials"][1:])) if res.nit else 0.0
    return out


def _torch_opt(
    prefix: str,
    problem: dict[str, Any],
    tol: float,
    iters: int,
    make: Callable[[list[Tensor]], torch.optim.Optimizer],
) -> dict[str, Any]:
    x = problem["x0"].clone().requires_grad_(True)  # on the problem's device
    opt = make([x])
    count = [0]

    def closure() -> Tensor:
        opt.zero_grad()
        loss = problem["f"](x)
        loss.backward()
        count[0] += 1
        return loss

    gaps, nfev, times = [float(problem["f"](x.detach())) - problem["f_star"]], [0.0], [0.0]
    start = time.perf_counter()
    for _ in range(iters):
        opt.step(closure)
        gaps.append(float(problem["f"](x.detach())) - problem["f_star"])
        nfev.append(float(count[0]))
        times.append(time.perf_counter() - start)
        if gaps[-1] <= tol or not math.isfinite(gaps[-1]):
            break
    return _metrics(prefix, gaps, nfev, times, tol)


def _scipy_newton(prefix: str, problem: dict[str, Any], tol: float, iters: int) -> dict[str, Any]:
    from scipy.optimize import minimize

    f = problem["f"]
    grad, hess = torch.func.grad(f), torch.func.hessian(f)
    count = [0]

    device = problem["x0"].device

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        count[0] += 1
        x = torch.from_numpy(z).to(device)
        return float(f(x)), grad(x).cpu().numpy()

    gaps, nfev, times = [float(f(problem["x0"])) - problem["f_star"]], [0.0], [0.0]
    start = time.perf_counter()

    def callback(intermediate_result: Any) -> None:
        gaps.append(float(intermediate_result.fun) - problem["f_star"])
        nfev.append(float(count[0]))
        times.append(time.perf_counter() - start)
        if gaps[-1] <= tol:
            raise StopIteration

    minimize(fun, problem["x0"].cpu().numpy(), jac=True, method="trust-exact",
             hess=lambda z: hess(torch.from_numpy(z).to(device)).cpu().numpy(), callback=callback,
             options={"maxiter": iters, "gtol": 1e-14})  # fmt: skip
    return _metrics(prefix, gaps, nfev, times, tol)


def _lbfgs(params: list[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=25, history_size=20,
                             tolerance_grad=1e-15, tolerance_change=1e-30,
                             line_search_fn="strong_wolfe")  # fmt: skip


def _lse_run(kind: str, pr: dict[str, Any], config: Mapping[str, Any], seed: int) -> dict[str, Any]:
    tol, maxiter = config["lse_tol"], config["lse_maxiter"]
    if kind == "gns-exact":
        return _gns("lse", pr, tol, maxiter, hessian="exact", metric=pr["metric"])
    if kind == "gns-wgn":
        wgn = WeightedGaussNewtonLSE(pr["A"], pr["b"], pr["mu"])
        return _gns("lse", pr, tol, maxiter, hessian=wgn, metric=pr["metric"])
    if kind == "gns-gd-B":
        return _gns("lse", pr, tol, maxiter, hessian="zero", metric=pr["metric"])
    if kind == "gns-gd":
        return _gns("lse", pr, tol, maxiter, hessian="zero")
    if kind == "sgd":
        return _torch_opt("lse", pr, tol, maxiter,
                          lambda p: torch.optim.SGD(p, lr=1.0 / pr["L"]))  # fmt: skip
    if kind == "lbfgs":
        return _torch_opt("lse", pr, tol, maxiter, _lbfgs)
    return _scipy_newton("lse", pr, tol, maxiter)


def _logreg_run(
    kind: str, pr: dict[str, Any], config: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    tol, maxiter = config["lr_tol"], config["lr_maxiter"]
    if kind == "gns-exact":
        return _gns("logreg", pr, tol, maxiter, hessian="exact")
    if kind == "gns-lazy5":
        return _gns("logreg", pr, tol, maxiter, hessian=LazyHessian("exact", every=5))
    if kind == "gns-sub20":
        sub = SubsampledHessian(pr["per_example"], pr["n"], 0.2, seed=seed, is_psd=True)
        return _gns("logreg", pr, tol, maxiter, hessian=sub)
    if kind == "gns-bohning":
        return _gns("logreg", pr, tol, maxiter, hessian=FixedHessian(pr["bohning"]))
    if kind == "sgd":
        return _torch_opt("logreg", pr, tol, config["lr_gd_iters"],
                          lambda p: torch.optim.SGD(p, lr=1.0 / pr["L"]))  # fmt: skip
    if kind == "lbfgs":
        return _torch_opt("logreg", pr, tol, config["lr_gd_iters"], _lbfgs)
    return _scipy_newton("logreg", pr, tol, maxiter)


def _cheb_run(
    kind: str, pr: dict[str, Any], config: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    u, x0, maxiter = _cheb_residuals, pr["x0"], config["cheb_maxiter"]
    out: dict[str, Any] = {}
    for p in (2, 4):

        def f(x: Tensor, p: int = p) -> Tensor:
            return torch.linalg.vector_norm(u(x)) ** p / p

        hessian = {"gns-gn": GaussNewton(u, p), "gns-exact": "exact", "gns-gd": "zero"}[kind]
        res = gns_minimize(f, x0, hessian=hessian, maxiter=maxiter, gtol=1e-8,
                           ftol=1e-12, f_star=0.0)  # fmt: skip
        fs = res.history["f"]
        out[f"p{p}_iters_to_tol"] = float(res.nit) if res.status in ("ftol", "gtol") else math.inf
        out[f"p{p}_final_f"] = float(fs[-1])
        out[f"p{p}_final_dist"] = float(torch.linalg.vector_norm(res.x - 1))
        out[f"cheb_p{p}_f"] = [max(v, FLOOR) for v in fs]
    out["step"] = [float(i) for i in range(max(len(out["cheb_p2_f"]), len(out["cheb_p4_f"])))]
    return out


_PROBLEMS = {"lse": _lse, "logreg": _logreg, "cheb": _cheb}
_RUNS = {"lse": _lse_run, "logreg": _logreg_run, "cheb": _cheb_run}

_APPROX = ("logreg/gns-exact", "logreg/gns-lazy5", "logreg/gns-sub20", "logreg/gns-bohning")


CLAIMS = [
    Claim(
        name="lse-wgn-fast",
        quantity="iterations to f − f* ≤ 1e-8 (count), GNS weighted Gauss–Newton, softmax",
        description="worst seed: largest iteration count of GNS-WGN to reach the tolerance",
        statement="Global linear rates for softmax with approximate Hessians: GNS with the "
        "weighted Gauss–Newton approximation reaches f − f* ≤ 1e-8 (worst seed, iterations).",
        metric=lambda r: r.max("lse/gns-wgn", "iters_to_tol"),
        op="<=",
        threshold={"smoke": 250.0, "quick": 250.0, "full": 400.0},
    ),
    Claim(
        name="lse-wgn-vs-gd-B",
        quantity="iterations to tolerance, GNS-WGN / gradient method in metric B (ratio)",
        description="worst seed: largest per-seed ratio of iteration counts to f − f* ≤ 1e-8",
        statement="... with approximate Hessians, far fewer iterations than the gradient method: "
        "iterations(weighted GN) / iterations(gradient method in metric B), worst seed.",
        metric=lambda r: r.worst_ratio("lse/gns-wgn", "lse/gns-gd-B", "iters_to_tol"),
        op="<=",
        threshold=0.25,
        scales=("quick", "full"),
    ),
    Claim(
        name="lse-exact-fast",
        quantity="iterations to f − f* ≤ 1e-8 (count), GNS exact Hessian, softmax",
        description=(
            "worst seed: largest iteration count of exact-Hessian GNS to reach the tolerance"
        ),
        statement="The exact-Hessian method reaches f − f* ≤ 1e-8 within 80 iterations "
        "(worst seed).",
        metric=lambda r: r.max("lse/gns-exact", "iters_to_tol"),
        op="<=",
        threshold=80.0,
    ),
    Claim(
        name="logreg-approx-reach",
        quantity=(
            "iterations to f − f* ≤ 1e-10 (count), approximate-Hessian GNS, logistic regression"
        ),
        description=(
            "largest iteration count over the exact, lazy, subsampled and Böhning arms and seeds"
        ),
        statement="Global linear rates for logistic regression with approximate Hessians: exact, "
        "lazy, subsampled and Böhning-bound GNS all reach f − f* ≤ 1e-10 (worst arm and seed, "
        "iterations).",
        metric=lambda r: max(r.max(m, "iters_to_tol") for m in _APPROX),
        op="<=",
        threshold=300.0,
    ),
    Claim(
        name="logreg-linear-rate",
        quantity="linear-rate factor q with gap_k ≤ gap_5·q^(k−5) (dimensionless)",
        description="largest fitted q over the approximate-Hessian arms and seeds",
        statement="The gap of every approximate-Hessian run decays at least geometrically after "
        "iteration 5: worst q with gap_k ≤ gap_5 q^(k−5).",
        metric=lambda r: max(r.max(m, "worst_rate") for m in _APPROX),
        op="<=",
        threshold=0.97,
    ),
    Claim(
        name="logreg-gd-slow",
        quantity="final optimality gap f − f* of gradient descent after the budget (loss units)",
        description=(
            "best seed: smallest final gap of torch.optim.SGD with step 1/L on the ill-conditioned"
            " problem"
        ),
        statement="Gradient descent (torch.optim.SGD, step 1/L) is far slower on the "
        "ill-conditioned problem: its gap after the iteration budget (best seed).",
        metric=lambda r: r.min("logreg/sgd", "final_gap"),
        op=">",
        threshold={"smoke": 1e-6, "quick": 1e-6, "full": 1e-6},
    ),
    Claim(
        name="monotone",
        quantity="fraction of GNS runs with f(x_{k+1}) ≤ f(x_k) on every step",
        description=(
            "smallest per-run monotone flag (1 = monotone) over all GNS arms of R1 and R2 and seeds"
        ),
        statement="With the function-value acceptance test f(x_{k+1}) ≤ f(x_k) on every step "
        "(all GNS arms of R1 and R2, fraction of monotone runs).",
        metric=lambda r: min(
            r.min(m, "monotone") for m in (*_APPROX, "lse/gns-exact", "lse/gns-wgn", "lse/gns-gd-B")
        ),
        op=">=",
        threshold=1.0,
    ),
]

register(
    Reproduction(
        name="gns",
        title="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
        arxiv="2506.13710",
        spec="gradient_normalized_smoothness.md",
        configs=CONFIGS,
        methods=list(ARMS),
        experiment=run,
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 3, "full": 3},
        seed_base=100,
        methods_by_scale={  # smoke: only the arms its claims read
            "smoke": ["lse/gns-exact", "lse/gns-wgn", "lse/gns-gd-B", *_APPROX, "logreg/sgd"]
        },
        plot_x="step",
        plot_y=("lse_gap", "logreg_gap", "cheb_p4_f"),
        plot_logy=True,
        summary="Gradient-regularized Newton (λ = ‖∇f‖/γ, adaptive γ) with exact, weighted "
        "Gauss–Newton, lazy, subsampled and Böhning Hessians vs gradient descent, L-BFGS and "
        "trust-region Newton on softmax and ill-conditioned logistic regression.",
    )
)
