"""Reproduction ``meco``: maximum likelihood via compositional optimization (MECO) against
noise-contrastive estimation.

Three experiments, each one or more arms of the run (one experiment call per seed runs them all):

* ``landscape`` (deterministic): the population gradients of the 1-D Gaussian mean problem
  (data N(R, 1), noise N(0, 1), model f_θ(x) = −(x − θ)²/2) by 200-node Gauss–Hermite quadrature,
  computed with :class:`MECOLoss` / :class:`NCELoss` themselves (probability-weighted samples);
  NCE at its optimal log-normaliser for that θ (``scipy.optimize.minimize_scalar``).
* ``meco-1d`` / ``nce-sgd-1d`` / ``nce-adam-1d``: the stochastic 1-D problem, θ₀ = 0,
  B = B' = 256; MECO with γ = 0.1 and the paper's momentum step (``torch.optim.SGD`` with
  momentum 1 − β, dampening 1 − β, β = 0.1, lr 0.05); NCE with ``torch.optim.SGD`` lr 0.05 or
  ``torch.optim.Adam`` lr 0.01 on (θ, c), c₀ = log √(2π). Metric: the first iteration after which
  |θ − R| < 0.1 forever (``iters + 1`` if never) and the mean of the last 200 iterates.
* ``meco/<noise>`` / ``nce/<noise>``: 2-D density estimation of eight Gaussians (radius 2,
  std 0.25; 5000 train / 5000 test drawn from the seed), energy MLP 2→64→SiLU→64→SiLU→1,
  ``torch.optim.Adam`` lr 1e-3, B = B' = 256; noise fitted to the data (``fitted``), N(0, 4² I)
  (``wide``) or N(0, 0.7² I) (``narrow``). Metric: exact test NLL, log Z on a 300 × 300 grid on
  [−5, 5]². The sample, the model init and the batches are shared between MECO and NCE for a
  seed.

The run uses seeds from 100, held out from the thresholds' calibration seeds 0–2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge._core import seed_everything
from optforge.losses.meco import (
    MECOLoss,
    NCELoss,
    fit_gaussian_noise,
    grid_log_partition,
    meco_momentum_sgd,
)
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

_BASE: dict[str, Any] = {
    "batch": 256,
    # 1-D Gaussian mean estimation
    "r_values": [1.0, 2.0],
    "iters_1d": 1500,
    "gamma": 0.1,
    "beta": 0.1,
    "lr_1d": 0.05,
    "lr_adam_1d": 0.01,
    # 2-D eight Gaussians
    "n_train": 5000,
    "n_test": 5000,
    "hidden": 64,
    "lr_2d": 1e-3,
    "iters_2d": 2000,
    "eval_every": 250,
    "early_iter": 500,
    "grid": 300,
}

CONFIGS = {
    "smoke": {**_BASE, "r_values": [1.0], "iters_1d": 400},
    "quick": _BASE,
    "full": {**_BASE, "r_values": [1.0, 2.0, 3.0], "iters_1d": 3000, "iters_2d": 4000},
}

ARMS = (
    "landscape",
    "meco-1d",
    "nce-sgd-1d",
    "nce-adam-1d",
    *(f"{m}/{k}" for k in ("narrow", "wide", "fitted") for m in ("meco", "nce")),
)


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed; the 2-D arms share the seed's eight-Gaussians sample."""
    out: dict[str, dict[str, Any]] = {}
    data: tuple[torch.Tensor, torch.Tensor] | None = None
    for arm in arms:
        seed_everything(seed)
        if arm == "landscape":
            out[arm] = run_landscape(config, seed, device)
        elif arm.endswith("-1d"):
            out[arm] = _run_1d(config, seed, device, arm.removesuffix("-1d"))
        else:
            if data is None:
                data = _eight_gaussians_data(config, seed, device)
            method, noise_kind = arm.split("/")
            out[arm] = _run_2d(config, seed, device, data, method, noise_kind)
    return out


# -- landscape (deterministic) ------------------------------------------------------------------
def _hermite(mean: float, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    t, w = np.polynomial.hermite.hermgauss(n)
    x = torch.tensor(mean + math.sqrt(2.0) * t, dtype=torch.float64)[:, None]
    return x, torch.tensor(w / math.sqrt(math.pi), dtype=torch.float64)


def _std_normal_1d(dtype: torch.dtype = torch.float64, device: str = "cpu") -> Any:
    # validate_args=False: as in _noise, the losses check the samples themselves
    base = torch.distributions.Normal(
        torch.zeros(1, dtype=dtype, device=device),
        torch.ones(1, dtype=dtype, device=device),
        validate_args=False,
    )
    return torch.distributions.Independent(base, 1, validate_args=False)


def _landscape_grads(r: float, theta: float) -> tuple[float, float]:
    """(MECO ‖∇F‖, NCE ‖∂J/∂θ‖ at the optimal c) for the population 1-D problem."""
    from scipy.optimize import minimize_scalar

    x, wx = _hermite(r)
    z, wz = _hermite(0.0)
    th = torch.tensor([theta], dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> torch.Tensor:
        return -0.5 * (t[:, 0] - th) ** 2

    meco = MECOLoss(_std_normal_1d(), gamma=1.0)(f, x, z, x_weights=wx, z_weights=wz)
    (g_meco,) = torch.autograd.grad(meco, th)
    nce = NCELoss(_std_normal_1d(), nu=1.0)

    def j(c: float) -> torch.Tensor:
        with torch.no_grad():
            nce.log_normalizer.fill_(c)
        return nce(f, x, z, x_weights=wx, z_weights=wz)

    best = minimize_scalar(lambda c: float(j(c).detach()), bracket=(-5.0, 5.0), tol=1e-12)
    (g_nce,) = torch.autograd.grad(j(best.x), th)
    return abs(float(g_meco)), abs(float(g_nce))


def run_landscape(config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r, theta in [(2.0, 1.0), (4.0, 2.0), (6.0, 4.5), (8.0, 6.0)]:
        g_meco, g_nce = _landscape_grads(r, theta)
        out[f"meco_grad_R{r:g}"] = g_meco
        out[f"nce_grad_R{r:g}"] = g_nce
    return out


# -- 1-D stochastic Gaussian mean estimation ---------------------------------------------------
def _run_1d(config: Mapping[str, Any], seed: int, device: str, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    b, iters = config["batch"], config["iters_1d"]
    for r in config["r_values"]:
        theta = torch.zeros(1, device=device, requires_grad=True)

        def f(t: torch.Tensor, theta: torch.Tensor = theta) -> torch.Tensor:
            return -0.5 * (t[:, 0] - theta) ** 2

        noise = _std_normal_1d(torch.float32, device)
        if method == "meco":
            loss: nn.Module = MECOLoss(noise, gamma=config["gamma"], seed=seed)
            opt: torch.optim.Optimizer = meco_momentum_sgd(
                [theta], lr=config["lr_1d"], beta=config["beta"]
            )
        else:
            loss = NCELoss(noise, nu=1.0, init_log_normalizer=_LOG_SQRT_2PI, seed=seed)
            loss.to(device)
            params = [theta, *loss.parameters()]
            if method == "nce-sgd":
                opt = torch.optim.SGD(params, lr=config["lr_1d"])
            else:
                opt = torch.optim.Adam(params, lr=config["lr_adam_1d"])
        data_gen = torch.Generator(device=device).manual_seed(1000 + seed)
        thetas = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # ESS warning: expected for R ≥ 2
            for _ in range(iters):
                x = r + torch.randn(b, 1, generator=data_gen, device=device)
                opt.zero_grad()
                loss(f, x).backward()
                opt.step()
                thetas.append(theta.detach().clone())
        trace = torch.cat(thetas).cpu()
        # trace[i] is θ after iteration i + 1; hit = first iteration after which every iterate
        # is within 0.1 of R (iters + 1 = never)
        bad = torch.nonzero((trace - r).abs() >= 0.1)
        out[f"hit_R{r:g}"] = float(1 if len(bad) == 0 else int(bad[-1]) + 2)
        out[f"last200_R{r:g}"] = float(trace[-200:].mean())
    return out


# -- 2-D eight Gaussians -------------------------------------------------------------------------
def _eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.randint(8, (n,), generator=generator)
    ang = k * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
    return centres + 0.25 * torch.randn(n, 2, generator=generator)


def _eight_gaussians_data(
    config: Mapping[str, Any], seed: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's train and test samples."""
    gen = torch.Generator().manual_seed(seed)
    x_train = _eight_gaussians(config["n_train"], gen).to(device)
    x_test = _eight_gaussians(config["n_test"], gen).to(device)
    return x_train, x_test


def _noise(kind: str, x_train: torch.Tensor) -> Any:
    # validate_args=False: the losses check their samples for NaN/inf themselves, and a
    # Gaussian's support is all of R^2, so torch's per-call sample validation checks nothing more
    if kind == "fitted":
        return fit_gaussian_noise(x_train, validate_args=False)
    std = {"wide": 4.0, "narrow": 0.7}[kind]
    zeros = torch.zeros(2, device=x_train.device)
    base = torch.distributions.Normal(zeros, torch.full_like(zeros, std), validate_args=False)
    return torch.distributions.Independent(base, 1, validate_args=False)


def _mlp_energy(net: nn.Sequential) -> Any:
    """``t -> net(t)[:, 0]`` for a ``Linear``/``SiLU`` stack with one output, as the same
    ``F.linear``/``F.silu`` calls on ``net``'s parameters without the module-call overhead
    (bitwise the same values and gradients)."""
    layers: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for layer in net:
        if isinstance(layer, nn.Linear):
            layers.append((layer.weight, layer.bias))
        elif type(layer) is nn.SiLU and not layer.inplace:
            layers.append(None)
        else:
            raise TypeError(f"_mlp_energy handles Linear and SiLU layers, got {layer!r}")
    linear, silu = nn.functional.linear, nn.functional.silu

    def f(t: torch.Tensor) -> torch.Tensor:
        for wb in layers:
            t = silu(t) if wb is None else linear(t, wb[0], wb[1])
        # (n, 1) -> (n,): a view, the same values as t[:, 0] and a cheaper backward
        return t.view(t.shape[0])

    return f


def _run_2d(
    config: Mapping[str, Any],
    seed: int,
    device: str,
    data: tuple[torch.Tensor, torch.Tensor],
    method: str,
    noise_kind: str,
) -> dict[str, Any]:
    x_train, x_test = data
    h = config["hidden"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # same init for every arm of a seed
        net = mlp([2, h, h, 1], activation=nn.SiLU)
    net.to(device)
    f = _mlp_energy(net)

    noise = _noise(noise_kind, x_train)
    if method == "meco":
        loss: nn.Module = MECOLoss(noise, gamma=config["gamma"], seed=2000 + seed)
    else:
        loss = NCELoss(noise, nu=1.0, seed=2000 + seed)
    loss.to(device)
    opt = torch.optim.Adam([*net.parameters(), *loss.parameters()], lr=config["lr_2d"])
    batches = torch.Generator().manual_seed(1000 + seed)

    def test_nll() -> float:
        with torch.no_grad():
            log_z = grid_log_partition(
                f, (-5.0, 5.0), config["grid"], dim=2, device=device, dtype=torch.float32
            )
            return float(-f(x_test).mean() + log_z)

    steps, nlls = [0], [test_nll()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ESS warning with mismatched noise
        for it in range(1, config["iters_2d"] + 1):
            idx = torch.randint(config["n_train"], (config["batch"],), generator=batches)
            opt.zero_grad()
            value = loss(f, x_train[idx.to(device)])
            if not math.isfinite(value.item()):
                raise FloatingPointError(f"{method}/{noise_kind}: non-finite loss at step {it}")
            value.backward()
            opt.step()
            if it % config["eval_every"] == 0:
                steps.append(it)
                nlls.append(test_nll())
    early = nlls[steps.index(config["early_iter"])]
    out: dict[str, Any] = {"nll_early": early, "nll_final": nlls[-1], "step": steps}
    out["test_nll"] = nlls
    if method == "meco":
        out["final_ess"] = float(loss.last_ess)
    return out


def _worst_paired(noise_kind: str, metric: str):
    """Largest per-seed MECO − NCE difference (``< 0``: MECO lower on every seed)."""

    def value(r: Results) -> float:
        return -r.worst_gap(f"nce/{noise_kind}", f"meco/{noise_kind}", metric)

    return value


CLAIMS = [
    Claim(
        name="nce-landscape-flat",
        quantity="population |∂J/∂θ| of the NCE loss at R = 8, θ = 6 (gradient magnitude)",
        description=(
            "largest over seeds of NCE's exact population gradient magnitude, 1-D Gaussian mean, "
            "optimal c"
        ),
        statement="NCE's loss landscape is exponentially flat when the noise is far from the "
        "data: population |∂J/∂θ| at R = 8, θ = 6 (optimal c) is below 1e-4.",
        metric=lambda r: r.max("landscape", "nce_grad_R8"),
        op="<",
        threshold=1e-4,
    ),
    Claim(
        name="meco-landscape-well-conditioned",
        quantity="| ‖∇F‖ − 2 | of MECO's objective at R = 8, θ = 6 (gradient magnitude)",
        description="distance of MECO's largest population gradient norm over seeds from R − θ = 2",
        statement="MECO's objective keeps the gradient R − θ: |‖∇F‖ − 2| at R = 8, θ = 6.",
        metric=lambda r: abs(r.max("landscape", "meco_grad_R8") - 2.0),
        op="<",
        threshold=1e-6,
    ),
    Claim(
        name="meco-1d-faster-R1",
        quantity="hitting time, MECO / NCE-SGD at R = 1 (ratio of iteration counts)",
        description=(
            "median over seeds of MECO's hitting time divided by the median of NCE-SGD's, 1-D "
            "Gaussian mean"
        ),
        statement="1-D Gaussian mean estimation converges faster with MECO than with NCE: "
        "median hitting time of MECO / NCE-SGD at R = 1 (spec: ≤ 0.5).",
        metric=lambda r: r.median("meco-1d", "hit_R1") / r.median("nce-sgd-1d", "hit_R1"),
        op="<=",
        threshold=0.5,
    ),
    Claim(
        name="meco-1d-R2-reaches-mean",
        quantity="|mean of the last 200 iterates − R| at R = 2 (parameter units)",
        description=(
            "worst seed: largest distance of MECO's late-iterate mean from the true mean R = 2"
        ),
        statement="At R = 2 MECO's iterates settle at R: worst-seed |mean of last 200 "
        "iterates − R| < 0.1.",
        metric=lambda r: float(np.max(np.abs(r.values("meco-1d", "last200_R2") - 2.0))),
        op="<",
        threshold=0.1,
        scales=("quick", "full"),
    ),
    Claim(
        name="narrow-noise-early",
        quantity="test NLL (nats) at iteration 500, MECO − NCE, narrow noise",
        description=(
            "worst seed: largest per-seed exact test NLL difference MECO − NCE, eight Gaussians"
        ),
        statement="With badly matched (narrow) noise MECO learns much faster than NCE: "
        "worst-seed NLL_MECO − NLL_NCE at iteration 500 < −2.",
        metric=_worst_paired("narrow", "nll_early"),
        op="<",
        threshold=-2.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="narrow-noise-final",
        quantity="test NLL (nats) at the last iteration, MECO − NCE, narrow noise",
        description=(
            "worst seed: largest per-seed exact test NLL difference MECO − NCE, eight Gaussians"
        ),
        statement="... and stays better at the end of the budget: worst-seed NLL_MECO − "
        "NLL_NCE at the last iteration < −0.5.",
        metric=_worst_paired("narrow", "nll_final"),
        op="<",
        threshold=-0.5,
        scales=("quick", "full"),
    ),
    Claim(
        name="wide-noise-early",
        quantity="test NLL (nats) at iteration 500, MECO − NCE, wide noise",
        description=(
            "worst seed: largest per-seed exact test NLL difference MECO − NCE, eight Gaussians"
        ),
        statement="With wide noise MECO is ahead early: worst-seed NLL_MECO − NLL_NCE at "
        "iteration 500 < −0.5.",
        metric=_worst_paired("wide", "nll_early"),
        op="<",
        threshold=-0.5,
        scales=("quick", "full"),
    ),
]

register(
    Reproduction(
        name="meco",
        title="Learning Unnormalized Statistical Models via Compositional Optimization",
        arxiv="2306.07485",
        spec="compositional_ebm.md",
        configs=CONFIGS,
        methods=list(ARMS),
        experiment=run,
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 3, "full": 5},
        seed_base=100,
        methods_by_scale={
            "smoke": ("landscape", "meco-1d", "nce-sgd-1d"),
            "quick": (
                "landscape",
                "meco-1d",
                "nce-sgd-1d",
                "meco/narrow",
                "nce/narrow",
                "meco/wide",
                "nce/wide",
                "meco/fitted",
                "nce/fitted",
            ),
        },
        plot_x="step",
        plot_y=("test_nll",),
        summary="MECO (moving-average compositional MLE, γ = 0.1) vs NCE: 1-D Gaussian mean "
        "landscape and convergence, 2-D eight-Gaussians exact test NLL under narrow, wide and "
        "fitted noise.",
    )
)
