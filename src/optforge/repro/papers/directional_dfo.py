"""Reproduction ``directional-dfo``: attacks + cDSM vs DFO baselines through a trained network
(miniatures of the paper's problems).

**P1 — digits barycenter** (miniature of the ResNet-18 barycentric-image problem). A small CNN
(conv 1→8→16, 3×3, ReLU, average pooling, linear → 10) is trained on scikit-learn's digits
(``digits(pixels="unit")`` from :mod:`optforge.repro.data`: [0, 1]; Adam lr 1e-2, full batch,
seed 0). ``n`` digit images are picked with a fixed
generator (seed 0, stratified over classes; image 0 is the target).
``Φ(x) = softmax(CNN(Σ_i softmax(x)_i img_i) / T)``, ``f(y) = -‖y - Φ_target‖²`` with
``Φ_target = softmax(CNN(img_0)/T)``, and the box ``[-10, 10]ⁿ`` by the paper's penalty
``c(x) = (x - 10)(x + 10)/100``. ``x₀ = 0``, ``r₀ = 1``, ``r_atk ∈ [1e-6, 10]``,
``r_dsm ∈ [1e-5, 10]``. Every method maximises the same penalised ``f̃`` with the same budget.
The target for "evals-to-target" is ``f̃(x₀) + 0.9 (f* - f̃(x₀))`` with ``f*`` from white-box
Adam on ``f̃`` (a non-DFO reference, not used in the DFO assertions).

**P2 — kinetics** (miniature of the bio-diesel PINN), with the *analytic* surrogate (no training):
consecutive reactions A → B → C, ``k₁ = 0.05 Q``, ``k₂ = 0.002 Q²``, temperature
``T(τ) = 20 + 0.04 Q τ``; ``x = (t/120, Q/20) ∈ [0, 1]²``; ``Φ(x) = [A, B, C, T]`` at
``τ_i = t i / N`` (N = 20); ``f = mean_i B_i / (A_i + C_i + 0.1)``; constraints
``Q t ≤ 500``, ``T_i ≤ 65``, outputs ≥ 0, by the penalty with scale 1000 (T is an inactive output
of ``f``). ``x₀ = (40/120, 6/20)``, ``r₀ = 1e-3``, ``r_atk ∈ [1e-6, 1]``, ``r_dsm ∈ [1e-6, 0.1]``.

Arms: ``hybrid`` (FGSM, soft cross-entropy, ``"n+1"`` poll), ``cdsm`` (``"2n"`` poll),
``attacks-only``, ``random-line-search`` (our implementations of the official baselines),
``cma-es`` (pycma, σ₀ = 1 on P1 and 0.1 with the box on P2), ``nevergrad`` (``NGOpt``) and
``adam`` (white-box reference). The problems are fixed: the CNN and P1 are built once per process
(``memoize``) and shared by every arm of the one experiment per seed; each seed re-seeds every
arm's randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge._core import require, seed_everything
from optforge.dfo import (
    CDSMConfig,
    HybridConfig,
    OptimResult,
    SurrogateProblem,
    attacks_only,
    cdsm,
    hybrid_attack_cdsm,
    random_line_search,
)
from optforge.repro.cache import memoize
from optforge.repro.data import digits
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_BASE: dict[str, Any] = {
    "n_images": 32,
    "temperature": 1.0,
    "upsample": 8,
    "channels": 8,
    "epochs": 60,
    "budget": 1500,
    "n_checkpoints": 50,
    "precise_gap": 1e-6,
    "p2": True,
    "p2_budget": 500,
    "p2_times": 20,
}

CONFIGS = {
    "smoke": {**_BASE, "budget": 300, "p2": False},
    "quick": dict(_BASE),
    "full": {
        **_BASE,
        "n_images": 100,
        "upsample": 32,
        "channels": 16,
        "budget": 5000,
        "epochs": 100,
    },
}

ARMS = (
    "hybrid",
    "cdsm",
    "attacks-only",
    "random-line-search",
    "cma-es",
    "nevergrad",
    "adam(white-box)",
)


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed, all on the same P1 problem (built once per process)."""
    setup = _setup(config, device)
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        out[arm] = _ARM_RUNS[arm](config, seed, device, setup)
    return out


# ---------------------------------------------------------------------------- P1: digits
class _CNN(nn.Module):
    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * c * (side // 4) ** 2, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _images(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits(pixels="unit")
    x = x.reshape(-1, 1, 8, 8)
    if side != 8:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear")
    return x, y


@memoize
def _trained_cnn(side: int, channels: int, epochs: int, device: str) -> tuple[nn.Module, float]:
    x, y = _images(side)
    x, y = x.to(device), y.to(device)
    gen = torch.Generator().manual_seed(0)
    model = _CNN(channels, side)
    with torch.no_grad():
        for p in model.parameters():  # Kaiming-normal weights from a dedicated generator
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.zero_()
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    return model, acc


class _BarycenterPhi(nn.Module):
    """Φ(x) = softmax(CNN(Σ softmax(x)_i img_i) / T)."""

    def __init__(self, cnn: nn.Module, images: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.cnn, self.temperature = cnn, temperature
        self.register_buffer("images", images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(x, dim=-1)
        img = torch.einsum("i,ichw->chw", w, self.images).unsqueeze(0)
        return torch.softmax(self.cnn(img) / self.temperature, dim=-1).reshape(-1)


@memoize
def _p1(config: Mapping[str, Any], device: str) -> tuple[SurrogateProblem, float, float, float]:
    """The P1 problem, f̃(x₀), f* = 0 (the known supremum) and the CNN's train accuracy."""
    side, n = config["upsample"], config["n_images"]
    cnn, acc = _trained_cnn(side, config["channels"], config["epochs"], device)
    x, y = _images(side)
    gen = torch.Generator().manual_seed(0)
    target_index = int(torch.randint(len(y), (1,), generator=gen))
    others = [c for c in range(10) if c != int(y[target_index])]
    per_class = [torch.nonzero(y == c).flatten() for c in others]
    picks = [target_index]
    for i in range(n - 1):  # stratified over the 9 other classes: the target image is unique
        pool = per_class[i % 9]
        picks.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    images = x[picks].to(device)
    phi = _BarycenterPhi(cnn, images, config["temperature"]).to(device).eval()
    with torch.no_grad():
        target = torch.softmax(cnn(images[:1]) / config["temperature"], dim=-1).reshape(-1)

    def f(out: torch.Tensor) -> torch.Tensor:
        return -((out - target) ** 2).sum()

    def c_x(xx: torch.Tensor) -> torch.Tensor:
        return (xx - 10.0) * (xx + 10.0) / 100.0

    problem = SurrogateProblem(phi, f, c_x=c_x)
    x0 = torch.zeros(n, dtype=torch.float64)
    f0 = problem.value(x0)
    return problem, f0, 0.0, acc


def _adam(problem: SurrogateProblem, x0: torch.Tensor, steps: int, device: str) -> dict:
    """White-box gradient ascent on f̃ (torch.optim.Adam, lr 0.1); one value per step."""
    x = x0.to(device, torch.float32).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.1)
    values = []
    for _ in range(steps):
        opt.zero_grad()
        y, z = problem.outputs(x)
        value = problem.f(y) - (z**2).sum()
        values.append(float(value.detach()))
        (-value).backward()
        opt.step()
    return {"values": values, "x": x.detach().cpu().double()}


def _p1_metrics(
    values: list[float], f0: float, f_star: float, config: Mapping[str, Any], x_best=None
) -> dict[str, Any]:
    budget = config["budget"]
    values = list(values[:budget])
    best = np.maximum.accumulate(np.asarray(values, dtype=float))
    target = f0 + 0.9 * (f_star - f0)
    hit = np.nonzero(best >= target)[0]
    improved = np.nonzero(best > f0)[0]
    precise = np.nonzero(best >= -config["precise_gap"])[0]
    checkpoints = np.unique(np.linspace(1, budget, config["n_checkpoints"]).astype(int))
    curve = [float(-best[min(c, len(best)) - 1]) for c in checkpoints]
    return {
        "p1_final_f": float(best[-1]),
        "p1_evals_to_target": float(hit[0] + 1) if len(hit) else float(budget + 1),
        "p1_evals_to_precise": float(precise[0] + 1) if len(precise) else float(budget + 1),
        "p1_first_improvement": float(improved[0] + 1) if len(improved) else float(budget + 1),
        "p1_f0": f0,
        "p1_f_star": f_star,
        "evals": [float(c) for c in checkpoints],
        "p1_neg_f": curve,
    }


# ---------------------------------------------------------------------------- P2: kinetics
class _KineticsPhi(nn.Module):
    """Analytic [A, B, C, T] at τ_i = t·i/N for x = (t/120, Q/20)."""

    def __init__(self, n_times: int) -> None:
        super().__init__()
        self.register_buffer("frac", torch.arange(1, n_times + 1, dtype=torch.float64) / n_times)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, q = 120.0 * x[0], (20.0 * x[1]).clamp_min(1e-4)
        k1, k2 = 0.05 * q, 0.002 * q**2
        tau = t * self.frac
        a = torch.exp(-k1 * tau)
        b = k1 / (k2 - k1) * (torch.exp(-k1 * tau) - torch.exp(-k2 * tau))
        c = 1.0 - a - b
        temp = 20.0 + 0.04 * q * tau
        return torch.cat([a, b, c, temp])


def _p2(n_times: int) -> SurrogateProblem:
    phi = _KineticsPhi(n_times).eval()
    m = n_times

    def f(y: torch.Tensor) -> torch.Tensor:
        a, b, c = y[:m], y[m : 2 * m], y[2 * m : 3 * m]
        return (b / (a + c + 0.1)).mean()

    def c_x(x: torch.Tensor) -> torch.Tensor:
        return (120.0 * x[0] * 20.0 * x[1] / 500.0 - 1.0).reshape(1)

    def c_y(y: torch.Tensor) -> torch.Tensor:
        return torch.cat([(y[3 * m :] - 65.0) / 65.0, -y[: 3 * m]])

    return SurrogateProblem(
        phi,
        f,
        c_x=c_x,
        c_y=c_y,
        inactive_outputs=range(3 * m, 4 * m),
        penalty_scale=1000.0,
        bounds=(0.0, 1.0),
    )


_P2_X0 = torch.tensor([40.0 / 120.0, 6.0 / 20.0], dtype=torch.float64)


def _p2_metrics(problem: SurrogateProblem, x_best: torch.Tensor, f_best: float) -> dict:
    return {
        "p2_final_f": float(f_best),
        "p2_objective": problem.objective(x_best),
        "p2_violation": problem.violation(x_best),
    }


# ---------------------------------------------------------------------------- arms
_P1_HYBRID = HybridConfig(
    r0=1.0, r_min=1e-5, r_max=10.0, r_atk_min=1e-6, r_atk_max=10.0, poll="n+1"
)
_P1_CDSM = CDSMConfig(r0=1.0, r_min=1e-5, r_max=10.0, poll="2n")
_P2_HYBRID = HybridConfig(r0=1e-3, r_min=1e-6, r_max=0.1, r_atk_min=1e-6, r_atk_max=1.0, poll="n+1")
_P2_CDSM = CDSMConfig(r0=1e-3, r_min=1e-6, r_max=0.1, poll="2n")


def _setup(config: Mapping[str, Any], device: str):
    problem, f0, f_star, acc = _p1(config, device)
    return problem, f0, f_star, acc, torch.zeros(config["n_images"], dtype=torch.float64)


def _our_arm(kind: str):
    def run(config: Mapping[str, Any], seed: int, device: str, setup: tuple) -> dict[str, Any]:
        problem, f0, f_star, acc, x0 = setup
        budget = config["budget"]
        res: OptimResult
        if kind == "hybrid":
            res = hybrid_attack_cdsm(problem, x0, _P1_HYBRID, budget=budget, generator=seed)
        elif kind == "cdsm":
            res = cdsm(problem, x0, _P1_CDSM, budget=budget, generator=seed)
        elif kind == "attacks-only":
            res = attacks_only(problem, x0, r0=1.0, r_min=1e-6, r_max=10.0, budget=budget)
        else:
            res = random_line_search(
                problem, x0, r0=1.0, r_min=1e-5, r_max=10.0, budget=budget, generator=seed
            )
        out = _p1_metrics(res.values, f0, f_star, config)
        out["cnn_train_acc"] = acc
        out["n_evals"] = float(res.n_evals)
        if config["p2"] and kind in ("hybrid", "cdsm"):
            p2 = _p2(config["p2_times"])
            if kind == "hybrid":
                r2 = hybrid_attack_cdsm(
                    p2, _P2_X0, _P2_HYBRID, budget=config["p2_budget"], generator=seed
                )
            else:
                r2 = cdsm(p2, _P2_X0, _P2_CDSM, budget=config["p2_budget"], generator=seed)
            out.update(_p2_metrics(p2, r2.x_best, r2.f_best))
        return out

    return run


def _cma_values(fn, x0: np.ndarray, sigma0: float, budget: int, seed: int, bounds=None):
    cma = require("cma", "dfo")
    opts = {"maxfevals": budget, "seed": seed + 1, "verbose": -9}
    if bounds is not None:
        opts["bounds"] = list(bounds)
    es = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    values: list[float] = []
    xs: list[np.ndarray] = []
    while not es.stop() and len(values) < budget:
        pop = es.ask()
        losses = [fn(p) for p in pop]
        values += [-v for v in losses]
        xs += list(pop)
        es.tell(pop, losses)
    return values[:budget], xs[:budget]


def _run_cma(config: Mapping[str, Any], seed: int, device: str, setup: tuple) -> dict[str, Any]:
    problem, f0, f_star, _acc, x0 = setup

    def loss(p: np.ndarray) -> float:
        v = problem.value(torch.as_tensor(p, dtype=torch.float64))
        return -v if math.isfinite(v) else 1e30

    values, _ = _cma_values(loss, x0.numpy(), 1.0, config["budget"], seed)
    out = _p1_metrics(values, f0, f_star, config)
    if config["p2"]:
        p2 = _p2(config["p2_times"])

        def loss2(p: np.ndarray) -> float:
            return -p2.value(torch.as_tensor(p, dtype=torch.float64))

        v2, xs2 = _cma_values(
            loss2, _P2_X0.numpy(), 0.1, config["p2_budget"], seed, bounds=(0.0, 1.0)
        )
        i = int(np.argmax(v2))
        out.update(_p2_metrics(p2, torch.as_tensor(xs2[i], dtype=torch.float64), v2[i]))
    return out


def _run_nevergrad(
    config: Mapping[str, Any], seed: int, device: str, setup: tuple
) -> dict[str, Any]:
    ng = require("nevergrad", "dfo")
    problem, f0, f_star, _acc, x0 = setup
    param = ng.p.Array(init=x0.numpy())
    param.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.NGOpt(parametrization=param, budget=config["budget"])
    values = []
    for _ in range(config["budget"]):
        cand = opt.ask()
        v = problem.value(torch.as_tensor(cand.value, dtype=torch.float64))
        values.append(v)
        opt.tell(cand, -v if math.isfinite(v) else 1e30)
    return _p1_metrics(values, f0, f_star, config)


def _run_adam(config: Mapping[str, Any], seed: int, device: str, setup: tuple) -> dict[str, Any]:
    problem, f0, f_star, _acc, x0 = setup
    adam = _adam(problem, x0, config["budget"], device)
    return _p1_metrics(adam["values"], f0, f_star, config)


_ARM_RUNS = {
    "hybrid": _our_arm("hybrid"),
    "cdsm": _our_arm("cdsm"),
    "attacks-only": _our_arm("attacks-only"),
    "random-line-search": _our_arm("random-line-search"),
    "cma-es": _run_cma,
    "nevergrad": _run_nevergrad,
    "adam(white-box)": _run_adam,
}


# ---------------------------------------------------------------------------- claims
def _ett_ratio(r: Results) -> float:
    return r.median("hybrid", "p1_evals_to_target") / r.median("cdsm", "p1_evals_to_target")


_FULL = ("quick", "full")
CLAIMS = [
    Claim(
        name="hybrid-reaches-target-faster",
        statement="The attack component gives strong early progress: median evaluations to "
        "reach 90% of the achievable gain, hybrid ≤ 0.5 × cDSM (P1).",
        metric=_ett_ratio,
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-beats-cdsm-at-budget",
        statement="The hybrid consistently outperforms standard DFO baselines: median final f̃, "
        "hybrid − cDSM ≥ −1e-6 at equal budget (P1).",
        metric=lambda r: r.median("hybrid", "p1_final_f") - r.median("cdsm", "p1_final_f"),
        op=">=",
        threshold=-1e-6,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-cma-es",
        statement="... and matches or beats CMA-ES (pycma) at equal budget: median final f̃, "
        "hybrid − CMA-ES ≥ −0.02 (P1).",
        metric=lambda r: r.median("hybrid", "p1_final_f") - r.median("cma-es", "p1_final_f"),
        op=">=",
        threshold=-0.02,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-nevergrad",
        statement="... and beats nevergrad's NGOpt at equal budget: median final f̃, "
        "hybrid − NGOpt ≥ 0 (P1).",
        metric=lambda r: r.median("hybrid", "p1_final_f") - r.median("nevergrad", "p1_final_f"),
        op=">=",
        threshold=0.0,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-early-progress",
        statement="Every hybrid run improves on f̃(x₀) within its first 20 evaluations (P1).",
        metric=lambda r: r.max("hybrid", "p1_first_improvement"),
        op="<=",
        threshold=20.0,
    ),
    Claim(
        name="kinetics-hybrid-not-worse",
        statement="On the 2-D kinetics problem (where DFO suits) the hybrid is not worse: "
        "median final f̃, hybrid − cDSM ≥ −1e-3 (P2).",
        metric=lambda r: r.median("hybrid", "p2_final_f") - r.median("cdsm", "p2_final_f"),
        op=">=",
        threshold=-1e-3,
        scales=_FULL,
    ),
    Claim(
        name="kinetics-hybrid-feasible",
        statement="The hybrid's final point satisfies the constraints up to 1e-3 (P2, worst seed).",
        metric=lambda r: r.max("hybrid", "p2_violation"),
        op="<=",
        threshold=1e-3,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-refines-faster",
        statement="... and cDSM gives robust refinement: median evaluations to reach "
        "f̃ ≥ -1e-6 (near the known supremum 0), hybrid ≤ 0.5 × cDSM (P1; added metric).",
        metric=lambda r: (
            r.median("hybrid", "p1_evals_to_precise") / r.median("cdsm", "p1_evals_to_precise")
        ),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="smoke-hybrid-reaches-target",
        statement="Mechanism: within 300 evaluations the hybrid reaches 90% of the gain f* - "
        "f̃(x₀) on P1.",
        metric=lambda r: r.max("hybrid", "p1_evals_to_target"),
        op="<=",
        threshold=300.0,
        scales=("smoke",),
    ),
]

register(
    Reproduction(
        name="directional-dfo",
        title="Optimization by Directional Attacks: Solving Problems with Neural Network "
        "Surrogates",
        arxiv="2510.01461",
        spec="directional_attacks_dfo.md",
        configs=CONFIGS,
        methods=list(ARMS),
        experiment=run,
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 5, "full": 3},
        seed_base=100,
        methods_by_scale={"smoke": ("hybrid", "cdsm")},
        extras=("dfo",),
        plot_x="evals",
        plot_y=("p1_neg_f",),
        plot_logy=True,
        summary="Attack + cDSM hybrid vs cDSM, attacks only, random line search, CMA-ES (pycma), "
        "NGOpt (nevergrad) on a digits-CNN barycenter problem and an analytic kinetics problem.",
    )
)
