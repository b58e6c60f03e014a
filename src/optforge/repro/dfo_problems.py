"""The problems of the ``directional-dfo`` reproduction (``repro/papers/directional_dfo.py``).

Miniatures of the paper's problems, each a :class:`~optforge.dfo.SurrogateProblem`:

**P1 — digits barycenter.** A small CNN (:class:`DigitsCNN`, trained by :func:`train_cnn`) and
``Φ(x) = softmax(CNN(Σ_i softmax(x)_i img_i) / T)`` (:func:`barycenter_problem`).

**P2 — kinetics.** The analytic surrogate of consecutive reactions A → B → C
(:func:`kinetics_problem`, start :data:`P2_X0`).

**P3 — latent counterfactual.** A VAE (:class:`DigitsVAE`, :func:`train_vae`) and the P1 CNN:
``Φ(z) = [z, softmax(CNN(decoder(z)))]`` (:func:`counterfactual_parts`, :func:`p3_problem`).

The full definitions (budgets, radii, constraints) are in the reproduction's docstring. The
trained models and built problems are cached per process by the reproduction module's
``memoize`` wrappers (so the job scheduler sees its per-process caches), not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge.dfo import SurrogateProblem
from optforge.repro.data import digits

__all__ = [
    "P2_X0",
    "BarycenterPhi",
    "CounterfactualPhi",
    "DigitsCNN",
    "DigitsVAE",
    "KineticsPhi",
    "RecordingProblem",
    "adam_ascent",
    "barycenter_problem",
    "counterfactual_parts",
    "digit_images",
    "kinetics_problem",
    "p1_metrics",
    "p2_metrics",
    "p3_metrics",
    "p3_problem",
    "train_cnn",
    "train_vae",
]


# ---------------------------------------------------------------------------- P1: digits
class DigitsCNN(nn.Module):
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


def digit_images(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits(pixels="unit")
    x = x.reshape(-1, 1, 8, 8)
    if side != 8:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear")
    return x, y


def train_cnn(side: int, channels: int, epochs: int, device: str) -> tuple[nn.Module, float]:
    """The P1 CNN trained on the digits (Adam lr 1e-2, full batch, seed 0), its train accuracy."""
    x, y = digit_images(side)
    x, y = x.to(device), y.to(device)
    gen = torch.Generator().manual_seed(0)
    model = DigitsCNN(channels, side)
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


class BarycenterPhi(nn.Module):
    """Φ(x) = softmax(CNN(Σ softmax(x)_i img_i) / T)."""

    def __init__(self, cnn: nn.Module, images: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.cnn, self.temperature = cnn, temperature
        self.register_buffer("images", images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(x, dim=-1)
        img = torch.einsum("i,ichw->chw", w, self.images).unsqueeze(0)
        return torch.softmax(self.cnn(img) / self.temperature, dim=-1).reshape(-1)


def barycenter_problem(
    config: Mapping[str, Any], cnn: nn.Module, acc: float, device: str
) -> tuple[SurrogateProblem, float, float, float]:
    """The P1 problem on the trained ``cnn``, f̃(x₀), f* = 0 (the known supremum) and ``acc``."""
    side, n = config["upsample"], config["n_images"]
    x, y = digit_images(side)
    gen = torch.Generator().manual_seed(0)
    target_index = int(torch.randint(len(y), (1,), generator=gen))
    others = [c for c in range(10) if c != int(y[target_index])]
    per_class = [torch.nonzero(y == c).flatten() for c in others]
    picks = [target_index]
    for i in range(n - 1):  # stratified over the 9 other classes: the target image is unique
        pool = per_class[i % 9]
        picks.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    images = x[picks].to(device)
    phi = BarycenterPhi(cnn, images, config["temperature"]).to(device).eval()
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


def adam_ascent(problem: SurrogateProblem, x0: torch.Tensor, steps: int, device: str) -> dict:
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


def p1_metrics(
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
class KineticsPhi(nn.Module):
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


def kinetics_problem(n_times: int) -> SurrogateProblem:
    phi = KineticsPhi(n_times).eval()
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


P2_X0 = torch.tensor([40.0 / 120.0, 6.0 / 20.0], dtype=torch.float64)


def p2_metrics(problem: SurrogateProblem, x_best: torch.Tensor, f_best: float) -> dict:
    return {
        "p2_final_f": float(f_best),
        "p2_objective": problem.objective(x_best),
        "p2_violation": problem.violation(x_best),
    }


# ---------------------------------------------------------------------------- P3: counterfactual
class DigitsVAE(nn.Module):
    def __init__(self, latent: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z))


def train_vae(latent: int, epochs: int, device: str) -> DigitsVAE:
    """The P3 VAE trained on the digits (Adam lr 3e-3, full batch, seed 0)."""
    x, _ = digits(pixels="unit")
    x = x.reshape(len(x), 64).to(device)
    gen = torch.Generator().manual_seed(0)
    vae = DigitsVAE(latent)
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


class CounterfactualPhi(nn.Module):
    """Φ(z) = [z, softmax(CNN(decoder(z)))]."""

    def __init__(self, vae: DigitsVAE, cnn: nn.Module, side: int) -> None:
        super().__init__()
        self.vae, self.cnn, self.side = vae, cnn, side

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        img = self.vae.decode(z).reshape(1, 1, 8, 8)
        if self.side != 8:
            img = nn.functional.interpolate(img, size=(self.side, self.side), mode="bilinear")
        probs = torch.softmax(self.cnn(img), dim=-1).reshape(-1)
        return torch.cat([z.reshape(-1), probs])


class RecordingProblem(SurrogateProblem):
    """A :class:`SurrogateProblem` that records, per evaluation, whether the point is feasible."""

    feasible: list[bool]

    def value(self, x: torch.Tensor) -> float:
        value, violation = self.value_and_violation(x)  # one evaluation of Φ for both
        self.feasible.append(violation == 0.0)
        return value


def counterfactual_parts(
    config: Mapping[str, Any], cnn: nn.Module, vae: DigitsVAE, device: str
) -> tuple[dict[str, Any], torch.Tensor]:
    """The P3 problem's pieces (rebuilt per arm by :func:`p3_problem`) and ``z₀``."""
    d = config["p3_latent"]
    phi = CounterfactualPhi(vae, cnn, config["upsample"]).to(device).eval()
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


def p3_problem(parts: Mapping[str, Any], z0: torch.Tensor) -> tuple[RecordingProblem, torch.Tensor]:
    """A fresh P3 problem (its own feasibility record) from :func:`counterfactual_parts`."""
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

    problem = RecordingProblem(
        parts["phi"],
        f,
        c_x=c_x,
        c_y=c_y,
        inactive_outputs=range(d, d + 10),
        penalty_scale=10.0,
    )
    problem.feasible = []
    return problem, z0.clone()


def p3_metrics(values: list[float], feasible: list[bool], budget: int) -> dict[str, Any]:
    values, feasible = values[:budget], feasible[:budget]
    hit = [i for i, ok in enumerate(feasible) if ok]
    f0 = values[0]
    improved = [i for i, v in enumerate(values) if v > f0]
    return {
        "p3_final_f": float(max(values)),
        "p3_evals_to_feasible": float(hit[0] + 1) if hit else float(budget + 1),
        "p3_first_improvement": float(improved[0] + 1) if improved else float(budget + 1),
    }
