"""Reproduction ``directional-dfo``: attacks + cDSM vs DFO baselines through a trained network
(miniatures of the paper's problems).

**P1 — digits barycenter** (miniature of the ResNet-18 barycentric-image problem, at the
official ``n = 100``). A small CNN (conv 1→8→16, 3×3, ReLU, average pooling, linear → 10) is
trained on scikit-learn's digits (``digits(pixels="unit")`` from :mod:`optforge.repro.data`:
[0, 1]; Adam lr 1e-2, full batch, seed 0). ``n`` digit images are picked with a fixed
generator (seed 0, stratified over classes; image 0 is the target).
``Φ(x) = softmax(CNN(Σ_i softmax(x)_i img_i) / T)``, ``f(y) = -‖y - Φ_target‖²`` with
``Φ_target = softmax(CNN(img_0)/T)``, and the box ``[-10, 10]ⁿ`` by the paper's penalty
``c(x) = (x - 10)(x + 10)/100``. ``x₀ = 0``, ``r₀ = 1``, ``r_atk ∈ [1e-6, 10]``,
``r_dsm ∈ [1e-5, 10]``. Every method maximises the same penalised ``f̃`` with the same budget.
The target for "evals-to-target" is ``f̃(x₀) + 0.9 (f* - f̃(x₀))`` with ``f* = 0`` (the known
supremum).

**P2 — kinetics** (miniature of the bio-diesel PINN), with the *analytic* surrogate (no training):
consecutive reactions A → B → C, ``k₁ = 0.05 Q``, ``k₂ = 0.002 Q²``, temperature
``T(τ) = 20 + 0.04 Q τ``; ``x = (t/120, Q/20) ∈ [0, 1]²``; ``Φ(x) = [A, B, C, T]`` at
``τ_i = t i / N`` (N = 20); ``f = mean_i B_i / (A_i + C_i + 0.1)``; constraints
``Q t ≤ 500``, ``T_i ≤ 65``, outputs ≥ 0, by the penalty with scale 1000 (T is an inactive output
of ``f``). ``x₀ = (40/120, 6/20)``, ``r₀ = 1e-3``, ``r_atk ∈ [1e-6, 1]``, ``r_dsm ∈ [1e-6, 0.1]``.

**P3 — latent counterfactual** (miniature of the Warcraft counterfactual; the spec's optional
P3): a VAE (64 → 64 → 2·16, decoder 16 → 64 → 64) is trained on the digits and
``Φ(z) = [z, softmax(CNN(decoder(z)))]`` with the P1 CNN. From ``z₀`` = the encoding of a digit
of class ``a``, find the closest latent whose decoded image the CNN assigns to class ``t``:
``f = -‖z - z₀‖²``, constraints ``max_{j≠t} p_j - p_t + 0.05 ≤ 0`` and
``‖z‖ ∈ [‖z₀‖ - 1, ‖z₀‖ + 1]`` (the Warcraft latent's ring ``√d ± 1`` is the norm of its
prior's samples; our VAE's encodings are shorter, so the ring is centred on ``z₀``'s norm),
penalty scale 10, the class outputs inactive in ``f``; ``t`` is the runner-up class at ``z₀``.
``r₀ = 1``, ``r_atk ∈ [1e-5, 5]``, ``r_dsm ∈ [1e-4, 200]`` (Warcraft's radii).
Here the network's gradient is informative: a few attacks cross the class boundary.

Arms: ``hybrid`` (FGSM, soft cross-entropy, ``"n+1"`` poll), ``cdsm`` (the official cDSM,
:meth:`CDSMConfig.official`, ``"2n"`` poll), ``attacks-only``, ``random-line-search`` (our
implementations of the official baselines), ``nomad`` (NOMAD 4, ``PyNomadBBO``; the box of each
problem), ``cma-es`` (pycma, σ₀ = 1 on P1/P3 and 0.1 with the box on P2), ``nevergrad``
(``NGOpt``) and ``adam`` (white-box reference on P1). Both cDSM arms use the official covering
``r_c U^{1/n} w`` and, as every official run, no search step. The problems are fixed: the CNN,
the VAE and the problems are built once per process (``memoize``) and shared by every arm of
the one experiment per seed; each seed re-seeds every arm's randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge._core import seed_everything
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
from optforge.dfo.baselines import BaselineRun, run_cma, run_nevergrad, run_nomad
from optforge.repro.cache import memoize
from optforge.repro.dfo_problems import (
    P2_X0,
    DigitsVAE,
    adam_ascent,
    barycenter_problem,
    counterfactual_parts,
    kinetics_problem,
    p1_metrics,
    p2_metrics,
    p3_metrics,
    p3_problem,
    train_cnn,
    train_vae,
)
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_BASE: dict[str, Any] = {
    "n_images": 100,
    "temperature": 1.0,
    "upsample": 8,
    "channels": 8,
    "epochs": 60,
    "budget": 1010,
    "n_checkpoints": 50,
    "precise_gap": 1e-6,
    "p2": True,
    "p2_budget": 500,
    "p2_times": 20,
    "p3": True,
    "p3_budget": 400,
    "p3_latent": 16,
    "p3_vae_epochs": 400,
}

CONFIGS = {
    "smoke": {**_BASE, "budget": 300, "p2": False, "p3": False},
    "quick": dict(_BASE),
    "full": {**_BASE, "budget": 20_000, "p2_budget": 2000, "p3_budget": 4000},
}

ARMS = (
    "hybrid",
    "cdsm",
    "attacks-only",
    "random-line-search",
    "nomad",
    "cma-es",
    "nevergrad",
    "adam(white-box)",
)


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed, all on the same problems (built once per process)."""
    setup = _setup(config, device)
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        out[arm] = _run_arm(arm, config, seed, device, setup)
    return out


# ---------------------------------------------------------------------------- problems
# The problems live in :mod:`optforge.repro.dfo_problems`; the trained models and built
# problems are cached per process here, in the paper's module, where the job scheduler looks
# for per-process caches.
@memoize
def _trained_cnn(side: int, channels: int, epochs: int, device: str) -> tuple[nn.Module, float]:
    return train_cnn(side, channels, epochs, device)


@memoize
def _p1(config: Mapping[str, Any], device: str) -> tuple[SurrogateProblem, float, float, float]:
    """The P1 problem, f̃(x₀), f* = 0 (the known supremum) and the CNN's train accuracy."""
    cnn, acc = _trained_cnn(config["upsample"], config["channels"], config["epochs"], device)
    return barycenter_problem(config, cnn, acc, device)


@memoize
def _trained_vae(latent: int, epochs: int, device: str) -> DigitsVAE:
    return train_vae(latent, epochs, device)


@memoize
def _p3(config: Mapping[str, Any], device: str) -> tuple[dict[str, Any], torch.Tensor]:
    """The P3 problem's pieces (a fresh problem per arm by :func:`p3_problem`) and ``z₀``."""
    cnn, _ = _trained_cnn(config["upsample"], config["channels"], config["epochs"], device)
    vae = _trained_vae(config["p3_latent"], config["p3_vae_epochs"], device)
    return counterfactual_parts(config, cnn, vae, device)


# ---------------------------------------------------------------------------- arms
_P1_HYBRID = HybridConfig(
    r0=1.0, r_min=1e-5, r_max=10.0, r_atk_min=1e-6, r_atk_max=10.0, poll="n+1"
)
_P1_CDSM = CDSMConfig.official(r0=1.0, r_min=1e-5, r_max=10.0, poll="2n")
_P2_HYBRID = HybridConfig(r0=1e-3, r_min=1e-6, r_max=0.1, r_atk_min=1e-6, r_atk_max=1.0, poll="n+1")
_P2_CDSM = CDSMConfig.official(r0=1e-3, r_min=1e-6, r_max=0.1, poll="2n")
_P3_HYBRID = HybridConfig(r0=1.0, r_min=1e-4, r_max=200.0, r_atk_min=1e-5, r_atk_max=5.0)
_P3_CDSM = CDSMConfig.official(r0=1.0, r_min=1e-4, r_max=200.0, poll="2n")


def _setup(config: Mapping[str, Any], device: str):
    problem, f0, f_star, acc = _p1(config, device)
    return problem, f0, f_star, acc, torch.zeros(config["n_images"], dtype=torch.float64)


def _ours(kind: str, problem, x0, budget: int, seed: int, configs: tuple) -> OptimResult:
    hybrid_cfg, cdsm_cfg = configs
    if kind == "hybrid":
        return hybrid_attack_cdsm(problem, x0, hybrid_cfg, budget=budget, generator=seed)
    if kind == "cdsm":
        return cdsm(problem, x0, cdsm_cfg, budget=budget, generator=seed)
    r0, r_min, r_max = cdsm_cfg.r0, cdsm_cfg.r_min, cdsm_cfg.r_max
    if kind == "attacks-only":
        return attacks_only(
            problem, x0, r0=r0, r_min=hybrid_cfg.r_atk_min, r_max=hybrid_cfg.r_atk_max,
            budget=budget,
        )  # fmt: skip
    return random_line_search(
        problem, x0, r0=r0, r_min=r_min, r_max=r_max, budget=budget, generator=seed
    )


def _library(
    kind: str, problem: SurrogateProblem, x0: torch.Tensor, budget: int, seed: int,
    sigma0: float, bounds: tuple[float, float] | None,
) -> tuple[list[float], torch.Tensor]:  # fmt: skip
    """A library baseline maximising ``problem.value``: (values, best point)."""

    def loss(p: np.ndarray) -> float:
        return -problem.value(torch.as_tensor(p, dtype=torch.float64))

    x0n = x0.numpy()
    run: BaselineRun
    if kind == "nomad":
        run = run_nomad(loss, x0n, budget, seed + 1, bounds=bounds)
    elif kind == "cma-es":
        run = run_cma(loss, x0n, budget, seed, sigma0, bounds=bounds)
    else:
        run = run_nevergrad(loss, x0n, budget, seed, bounds=bounds)
    best = torch.as_tensor(run.x_best if run.x_best is not None else x0n, dtype=torch.float64)
    return [-v for v in run.values], best


_OURS = ("hybrid", "cdsm", "attacks-only", "random-line-search")
_LIBRARIES = ("nomad", "cma-es", "nevergrad")


def _run_arm(
    arm: str, config: Mapping[str, Any], seed: int, device: str, setup: tuple
) -> dict[str, Any]:
    problem, f0, f_star, acc, x0 = setup
    budget = config["budget"]
    out: dict[str, Any] = {}
    if arm == "adam(white-box)":
        adam = adam_ascent(problem, x0, budget, device)
        return p1_metrics(adam["values"], f0, f_star, config)
    # P1
    if arm in _OURS:
        res = _ours(arm, problem, x0, budget, seed, (_P1_HYBRID, _P1_CDSM))
        out.update(p1_metrics(res.values, f0, f_star, config))
        out["n_evals"] = float(res.n_evals)
    else:
        box = (-10.0, 10.0) if arm == "nomad" else None  # NOMAD is given the box
        values, _ = _library(arm, problem, x0, budget, seed, 1.0, box)
        out.update(p1_metrics(values, f0, f_star, config))
    out["cnn_train_acc"] = acc
    # P2: the hybrid, cDSM and the library baselines
    if config["p2"] and arm not in ("attacks-only", "random-line-search"):
        p2 = kinetics_problem(config["p2_times"])
        if arm in _OURS:
            r2 = _ours(arm, p2, P2_X0, config["p2_budget"], seed, (_P2_HYBRID, _P2_CDSM))
            out.update(p2_metrics(p2, r2.x_best, r2.f_best))
        else:
            v2, x2 = _library(arm, p2, P2_X0, config["p2_budget"], seed, 0.1, (0.0, 1.0))
            out.update(p2_metrics(p2, x2, max(v2)))
    # P3: every DFO arm
    if config["p3"]:
        p3, z0 = p3_problem(*_p3(config, device))
        if arm in _OURS:
            r3 = _ours(arm, p3, z0, config["p3_budget"], seed, (_P3_HYBRID, _P3_CDSM))
            values3 = r3.values
        else:
            values3, _ = _library(arm, p3, z0, config["p3_budget"], seed, 1.0, None)
        out.update(p3_metrics(values3, p3.feasible, config["p3_budget"]))
    return out


# ---------------------------------------------------------------------------- claims
def _ratio(metric: str, a: str = "hybrid", b: str = "cdsm") -> Callable[[Results], float]:
    return lambda r: r.median(a, metric) / r.median(b, metric)


def _gap(metric: str, b: str) -> Callable[[Results], float]:
    return lambda r: r.median("hybrid", metric) - r.median(b, metric)


_FULL = ("quick", "full")
CLAIMS = [
    Claim(
        name="hybrid-reaches-target-faster",
        quantity="evaluations to 90% of the achievable gain, hybrid / cDSM (ratio of medians), P1",
        description=(
            "median over seeds of the hybrid's blackbox evaluations to target divided by cDSM's"
        ),
        statement="The attack component gives strong early progress: median evaluations to "
        "reach 90% of the achievable gain, hybrid ≤ 0.5 × cDSM (P1, n = 100).",
        metric=_ratio("p1_evals_to_target"),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-feasible-faster",
        quantity=(
            "evaluations to the first feasible counterfactual, hybrid / cDSM (ratio of medians), P3"
        ),
        description=(
            "median over seeds of the hybrid's evaluations to feasibility divided by cDSM's"
        ),
        statement="... where the network's gradient is informative: median evaluations to the "
        "first feasible counterfactual, hybrid ≤ 0.5 × cDSM (P3).",
        metric=_ratio("p3_evals_to_feasible"),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-beats-cdsm-at-budget",
        quantity="final objective f̃ at equal budget, hybrid − cDSM (difference of medians), P1",
        description=(
            "median final f̃ of the hybrid minus median final f̃ of cDSM (higher is better)"
        ),
        statement="The hybrid consistently outperforms standard DFO baselines: median final f̃, "
        "hybrid − cDSM ≥ −1e-6 at equal budget (P1).",
        metric=_gap("p1_final_f", "cdsm"),
        op=">=",
        threshold=-1e-6,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-nomad",
        quantity="final objective f̃ at equal budget, hybrid − NOMAD (difference of medians), P1",
        description=(
            "median final f̃ of the hybrid minus median final f̃ of NOMAD (higher is better)"
        ),
        statement="... including NOMAD (MADS), the direct-search reference: median final f̃, "
        "hybrid − NOMAD ≥ 0 at equal budget (P1).",
        metric=_gap("p1_final_f", "nomad"),
        op=">=",
        threshold=0.0,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-cma-es",
        quantity="final objective f̃ at equal budget, hybrid − CMA-ES (difference of medians), P1",
        description=(
            "median final f̃ of the hybrid minus median final f̃ of CMA-ES (higher is better)"
        ),
        statement="... and matches or beats CMA-ES (pycma) at equal budget: median final f̃, "
        "hybrid − CMA-ES ≥ −0.02 (P1).",
        metric=_gap("p1_final_f", "cma-es"),
        op=">=",
        threshold=-0.02,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-nevergrad",
        quantity="final objective f̃ at equal budget, hybrid − NGOpt (difference of medians), P1",
        description=(
            "median final f̃ of the hybrid minus median final f̃ of nevergrad's NGOpt (higher is "
            "better)"
        ),
        statement="... and beats nevergrad's NGOpt at equal budget: median final f̃, "
        "hybrid − NGOpt ≥ 0 (P1).",
        metric=_gap("p1_final_f", "nevergrad"),
        op=">=",
        threshold=0.0,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-early-progress",
        quantity="evaluations to the first improvement on f̃(x₀) (count), hybrid, P1",
        description="worst seed: largest evaluation count before the hybrid first improves",
        statement="Every hybrid run improves on f̃(x₀) within its first 20 evaluations (P1).",
        metric=lambda r: r.max("hybrid", "p1_first_improvement"),
        op="<=",
        threshold=20.0,
    ),
    Claim(
        name="kinetics-hybrid-not-worse",
        quantity="final objective f̃ at equal budget, hybrid − cDSM (difference of medians), P2",
        description=(
            "median final f̃ of the hybrid minus median final f̃ of cDSM on the kinetics problem"
        ),
        statement="On the 2-D kinetics problem (where DFO suits) the hybrid is not worse: "
        "median final f̃, hybrid − cDSM ≥ −1e-3 (P2).",
        metric=_gap("p2_final_f", "cdsm"),
        op=">=",
        threshold=-1e-3,
        scales=_FULL,
    ),
    Claim(
        name="kinetics-hybrid-feasible",
        quantity="constraint violation of the final point (constraint units), hybrid, P2",
        description="worst seed: largest constraint violation of the hybrid's final point",
        statement="The hybrid's final point satisfies the constraints up to 1e-3 (P2, worst seed).",
        metric=lambda r: r.max("hybrid", "p2_violation"),
        op="<=",
        threshold=1e-3,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-refines-faster",
        quantity="evaluations to f̃ ≥ −1e-6, hybrid / cDSM (ratio of medians), P1",
        description=(
            "median over seeds of the hybrid's evaluations to near-optimal f̃ divided by cDSM's"
        ),
        statement="... and cDSM gives robust refinement: median evaluations to reach "
        "f̃ ≥ -1e-6 (near the known supremum 0), hybrid ≤ 0.5 × cDSM (P1; added metric).",
        metric=_ratio("p1_evals_to_precise"),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="smoke-hybrid-reaches-target",
        quantity="evaluations to 90% of the achievable gain (count), hybrid, P1",
        description="worst seed: largest evaluation count of the hybrid to reach the target",
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
        summary="Attack + cDSM hybrid vs cDSM, attacks only, random line search, NOMAD "
        "(PyNomadBBO), CMA-ES (pycma), NGOpt (nevergrad) on a digits-CNN barycenter problem "
        "(n = 100), an analytic kinetics problem and a VAE-latent counterfactual.",
    )
)
