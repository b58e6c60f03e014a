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
from optforge.repro.data import digits
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


# ---------------------------------------------------------------------------- P3: counterfactual
class _VAE(nn.Module):
    def __init__(self, latent: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z))


@memoize
def _trained_vae(latent: int, epochs: int, device: str) -> _VAE:
    x, _ = digits(pixels="unit")
    x = x.reshape(len(x), 64).to(device)
    gen = torch.Generator().manual_seed(0)
    vae = _VAE(latent)
    with torch.no_grad():
        for p in vae.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[1]) ** 0.5)
            else:
                p.zero_()
    vae = vae.to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(epochs):
        mu, logvar = vae.encode(x)
        eps = torch.randn(mu.shape, generator=gen).to(device)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = vae.dec(z)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum()
        opt.zero_grad()
        ((rec + kl) / len(x)).backward()
        opt.step()
    return vae.eval().requires_grad_(False)


class _CounterfactualPhi(nn.Module):
    """Φ(z) = [z, softmax(CNN(decoder(z)))]."""

    def __init__(self, vae: _VAE, cnn: nn.Module, side: int) -> None:
        super().__init__()
        self.vae, self.cnn, self.side = vae, cnn, side

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        img = self.vae.decode(z).reshape(1, 1, 8, 8)
        if self.side != 8:
            img = nn.functional.interpolate(img, size=(self.side, self.side), mode="bilinear")
        probs = torch.softmax(self.cnn(img), dim=-1).reshape(-1)
        return torch.cat([z.reshape(-1), probs])


class _RecordingProblem(SurrogateProblem):
    """A :class:`SurrogateProblem` that records, per evaluation, whether the point is feasible."""

    feasible: list[bool]

    def value(self, x: torch.Tensor) -> float:
        self.feasible.append(self.violation(x) == 0.0)
        return super().value(x)


@memoize
def _p3(config: Mapping[str, Any], device: str) -> tuple[dict[str, Any], torch.Tensor]:
    """The P3 problem's pieces (rebuilt per arm by :func:`_p3_problem`) and ``z₀``."""
    d = config["p3_latent"]
    cnn, _ = _trained_cnn(config["upsample"], config["channels"], config["epochs"], device)
    vae = _trained_vae(d, config["p3_vae_epochs"], device)
    phi = _CounterfactualPhi(vae, cnn, config["upsample"]).to(device).eval()
    x, y = digits(pixels="unit")
    gen = torch.Generator().manual_seed(0)
    # a digit whose decoded encoding the CNN classifies as its own label
    for i in torch.randperm(len(y), generator=gen).tolist():
        z0 = vae.encode(x[i].reshape(1, 64).to(device))[0].reshape(-1).double()
        probs = phi(z0.to(next(cnn.parameters()).dtype))[d:]
        if int(probs.argmax()) == int(y[i]):
            break
    order = torch.argsort(probs, descending=True)
    target = int(order[1])  # the runner-up class: the closest counterfactual
    return {"phi": phi, "d": d, "target": target, "norm": float(z0.norm())}, z0.cpu()


def _p3_problem(config: Mapping[str, Any], device: str) -> tuple[_RecordingProblem, torch.Tensor]:
    parts, z0 = _p3(config, device)
    d, target, ring = parts["d"], parts["target"], parts["norm"]
    z_ref = z0.clone()

    def f(y: torch.Tensor) -> torch.Tensor:
        return -((y[:d] - z_ref.to(y)) ** 2).sum()

    def c_y(y: torch.Tensor) -> torch.Tensor:
        probs = y[d:]
        others = torch.cat([probs[:target], probs[target + 1 :]])
        return (others.max() - probs[target] + 0.05).reshape(1)

    def c_x(z: torch.Tensor) -> torch.Tensor:
        norm = z.norm()
        return torch.stack([norm - (ring + 1.0), (ring - 1.0) - norm])

    problem = _RecordingProblem(
        parts["phi"],
        f,
        c_x=c_x,
        c_y=c_y,
        inactive_outputs=range(d, d + 10),
        penalty_scale=10.0,
    )
    problem.feasible = []
    return problem, z0.clone()


def _p3_metrics(values: list[float], feasible: list[bool], budget: int) -> dict[str, Any]:
    values, feasible = values[:budget], feasible[:budget]
    hit = [i for i, ok in enumerate(feasible) if ok]
    f0 = values[0]
    improved = [i for i, v in enumerate(values) if v > f0]
    return {
        "p3_final_f": float(max(values)),
        "p3_evals_to_feasible": float(hit[0] + 1) if hit else float(budget + 1),
        "p3_first_improvement": float(improved[0] + 1) if improved else float(budget + 1),
    }


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
        adam = _adam(problem, x0, budget, device)
        return _p1_metrics(adam["values"], f0, f_star, config)
    # P1
    if arm in _OURS:
        res = _ours(arm, problem, x0, budget, seed, (_P1_HYBRID, _P1_CDSM))
        out.update(_p1_metrics(res.values, f0, f_star, config))
        out["n_evals"] = float(res.n_evals)
    else:
        box = (-10.0, 10.0) if arm == "nomad" else None  # NOMAD is given the box
        values, _ = _library(arm, problem, x0, budget, seed, 1.0, box)
        out.update(_p1_metrics(values, f0, f_star, config))
    out["cnn_train_acc"] = acc
    # P2: the hybrid, cDSM and the library baselines
    if config["p2"] and arm not in ("attacks-only", "random-line-search"):
        p2 = _p2(config["p2_times"])
        if arm in _OURS:
            r2 = _ours(arm, p2, _P2_X0, config["p2_budget"], seed, (_P2_HYBRID, _P2_CDSM))
            out.update(_p2_metrics(p2, r2.x_best, r2.f_best))
        else:
            v2, x2 = _library(arm, p2, _P2_X0, config["p2_budget"], seed, 0.1, (0.0, 1.0))
            out.update(_p2_metrics(p2, x2, max(v2)))
    # P3: every DFO arm
    if config["p3"]:
        p3, z0 = _p3_problem(config, device)
        if arm in _OURS:
            r3 = _ours(arm, p3, z0, config["p3_budget"], seed, (_P3_HYBRID, _P3_CDSM))
            values3 = r3.values
        else:
            values3, _ = _library(arm, p3, z0, config["p3_budget"], seed, 1.0, None)
        out.update(_p3_metrics(values3, p3.feasible, config["p3_budget"]))
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
        statement="The attack component gives strong early progress: median evaluations to "
        "reach 90% of the achievable gain, hybrid ≤ 0.5 × cDSM (P1, n = 100).",
        metric=_ratio("p1_evals_to_target"),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-feasible-faster",
        statement="... where the network's gradient is informative: median evaluations to the "
        "first feasible counterfactual, hybrid ≤ 0.5 × cDSM (P3).",
        metric=_ratio("p3_evals_to_feasible"),
        op="<=",
        threshold=0.5,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-beats-cdsm-at-budget",
        statement="The hybrid consistently outperforms standard DFO baselines: median final f̃, "
        "hybrid − cDSM ≥ −1e-6 at equal budget (P1).",
        metric=_gap("p1_final_f", "cdsm"),
        op=">=",
        threshold=-1e-6,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-nomad",
        statement="... including NOMAD (MADS), the direct-search reference: median final f̃, "
        "hybrid − NOMAD ≥ 0 at equal budget (P1).",
        metric=_gap("p1_final_f", "nomad"),
        op=">=",
        threshold=0.0,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-cma-es",
        statement="... and matches or beats CMA-ES (pycma) at equal budget: median final f̃, "
        "hybrid − CMA-ES ≥ −0.02 (P1).",
        metric=_gap("p1_final_f", "cma-es"),
        op=">=",
        threshold=-0.02,
        scales=_FULL,
    ),
    Claim(
        name="hybrid-vs-nevergrad",
        statement="... and beats nevergrad's NGOpt at equal budget: median final f̃, "
        "hybrid − NGOpt ≥ 0 (P1).",
        metric=_gap("p1_final_f", "nevergrad"),
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
        metric=_gap("p2_final_f", "cdsm"),
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
        metric=_ratio("p1_evals_to_precise"),
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
        summary="Attack + cDSM hybrid vs cDSM, attacks only, random line search, NOMAD "
        "(PyNomadBBO), CMA-ES (pycma), NGOpt (nevergrad) on a digits-CNN barycenter problem "
        "(n = 100), an analytic kinetics problem and a VAE-latent counterfactual.",
    )
)
