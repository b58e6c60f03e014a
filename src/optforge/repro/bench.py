"""``optforge bench``: the performance suite, as ratios against the baselines a user would pick,
all measured in one process run (so the machine's speed cancels out).

Sections (each row is a "method" of the record; ``ratio`` < 1 means cheaper than the baseline):

* ``step[size]/<optimizer>``: time of one training step (forward, backward and the optimizer in
  its natural call form) of an MLP at two sizes, divided by the same step with
  ``torch.optim.Adam(foreach=True)``. First-order optimizers: ``loss.backward(); opt.step()``.
  AdAdaGrad: ``opt.backward(model, loss_fn, x, y)`` (per-example gradients for its test) then
  ``step``. Sven: ``step(model=, loss_fn=, inputs=, targets=)`` (per-example Jacobian). SSO:
  ``step(forward=, target_loss=)`` (one oracle call + 3 inner steps). GradNormSmoothNewton is not
  timed per step: it solves a dense ``d × d`` Newton system per step and is compared per
  function evaluation in ``benchmarks/regularized_newton.py``.
* ``wta/<variant>``: autograd's saved bytes (``optforge.nn.saved_tensor_bytes``) and the
  forward + backward time of a residual MLP whose linears are WTA-CRS layers, vs ``nn.Linear``
  (``ratio``) and ``torch.utils.checkpoint`` (``ratio_vs_checkpoint``).
* ``altmin/<solver>``: wall time until the relative error of a rank-k completion drops below a
  target: robust (sketched) AltMin vs exact AltMin (1e-6) and SoftImpute (1e-4; not with
  ``quick``: its λ path costs seconds even at n = 200).
* ``dfo/<method>``: objective evaluations until an ill-conditioned quadratic drops below a target:
  cDSM vs CMA-ES (``cma``, the ``dfo`` extra; ``ratio`` is NaN without it).

The record has the reproduction schema (name ``"bench"``, one pseudo-seed ``0``), so it goes into
the results store and ``optforge report`` renders it with a bar plot of ``ratio``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from optforge.repro.registry import Claim, Results
from optforge.repro.runner import SCHEMA_VERSION, environment_info, to_json_safe

SIZES = {"quick": (64, 512), "full": (256, 1024)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ratio(value: float, baseline: float) -> float:
    """``value / baseline``; NaN when the baseline never reached its target (or is missing)."""
    if not math.isfinite(baseline) or baseline <= 0:
        return math.nan
    return value / baseline


def time_interleaved(
    steps: dict[str, Callable[[], Any]], device: str, repeats: int
) -> dict[str, float]:
    """Median seconds per call of every step, timed in interleaved rounds (drift cancels)."""
    for fn in steps.values():  # warm-up (allocator, lazy state)
        fn()
        fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------------------------
# Optimizer step time vs Adam(foreach=True)
# --------------------------------------------------------------------------------------------


def _mlp(width: int, device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
    ).to(device)


def _step_fns(width: int, device: str) -> dict[str, Callable[[], Any]]:
    """One training step per optimizer, each in its natural call form, on the same MLP/batch."""
    from optforge.optim import (
        SSO,
        AdAdaGrad,
        AdaGradNorm,
        Langevin,
        NoisyOptimizer,
        OptimisticSGD,
        Sven,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g).to(device)
    y = torch.randn(64, generator=g).to(device)

    def mse(pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred.squeeze(-1), target)

    def per_example(pred: Tensor, target: Tensor) -> Tensor:
        return (pred.squeeze(-1) - target).pow(2)

    def first_order(make: Callable[[nn.Module], torch.optim.Optimizer]) -> Callable[[], Any]:
        model = _mlp(width, device)
        opt = make(model)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            mse(model(x), y).backward()
            opt.step()

        return step

    def adadagrad() -> Callable[[], Any]:
        model = _mlp(width, device)
        opt = AdAdaGrad(model.parameters(), lr=0.01, initial_batch_size=64, max_batch_size=128)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            opt.backward(model, mse, x, y)
            opt.step()
            opt.controller.batch_size = 64  # keep the test due every step

        return step

    def sven() -> Callable[[], Any]:
        model = _mlp(width, device)
        opt = Sven(model.parameters(), lr=0.1, k=32, solver_dtype=torch.float32)
        return lambda: opt.step(model=model, loss_fn=per_example, inputs=x, targets=y)

    def sso() -> Callable[[], Any]:
        model = _mlp(width, device)
        opt = SSO(model.parameters(), lr=1e-3, target_lr=0.1, inner_steps=3, inner="sgd")
        return lambda: opt.step(
            forward=lambda: model(x).squeeze(-1), target_loss=lambda z: F.mse_loss(z, y)
        )

    return {
        "adam": first_order(lambda m: torch.optim.Adam(m.parameters(), 1e-3, foreach=True)),
        "optimistic_sgd": first_order(lambda m: OptimisticSGD(m.parameters(), lr=1e-3)),
        "adagrad_norm": first_order(lambda m: AdaGradNorm(m.parameters(), lr=0.1)),
        "noisy_adam": first_order(
            lambda m: NoisyOptimizer(
                torch.optim.Adam(m.parameters(), 1e-3, foreach=True), eta=1e-4, seed=0
            )
        ),
        "langevin": first_order(lambda m: Langevin(m.parameters(), lr=1e-4, beta=1e4, seed=0)),
        "adadagrad": adadagrad(),
        "sven": sven(),
        "sso": sso(),
    }


def optimizer_steps(device: str, sizes: tuple[int, int], repeats: int) -> dict[str, dict]:
    """Step time of every optimizer / Adam(foreach=True)'s, at two MLP widths."""
    rows: dict[str, dict] = {}
    for label, width in zip(("small", "large"), sizes, strict=True):
        n_params = sum(p.numel() for p in _mlp(width, "cpu").parameters())
        median = time_interleaved(_step_fns(width, device), device, repeats)
        for name, seconds in median.items():
            if name == "adam":
                continue
            rows[f"step[{label}]/{name}"] = {
                "ratio": seconds / median["adam"],
                "ms": 1e3 * seconds,
                "baseline_ms": 1e3 * median["adam"],
                "params": float(n_params),
            }
    return rows


# --------------------------------------------------------------------------------------------
# WTA-CRS: saved bytes and step time vs nn.Linear and torch.utils.checkpoint
# --------------------------------------------------------------------------------------------


class _ResidualMLP(nn.Module):
    def __init__(self, width: int, depth: int, checkpoint: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))
            for _ in range(depth)
        )
        self.checkpoint = checkpoint

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            if self.checkpoint:
                x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = x + block(x)
        return x.pow(2).mean()


def wta_crs(device: str, width: int, batch: int, repeats: int) -> dict[str, dict]:
    from optforge.nn import convert_linear, convert_relu, saved_tensor_bytes

    def build(variant: str) -> nn.Module:
        torch.manual_seed(0)
        net = _ResidualMLP(width, depth=3, checkpoint=variant == "checkpoint")
        if variant.startswith("wta"):
            convert_relu(net)
            convert_linear(net, float(variant.split("-")[1]), include=("*.0", "*.2"))
        return net.to(device)

    variants = ("linear", "checkpoint", "wta-0.3", "wta-0.1")
    nets = {v: build(v) for v in variants}
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(0)).to(device)
    saved = {
        v: float(saved_tensor_bytes(lambda net=net: net(x), exclude=net.parameters()))
        for v, net in nets.items()
    }

    def step(net: nn.Module) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            net(x).backward()

        return run

    median = time_interleaved({v: step(n) for v, n in nets.items()}, device, repeats)
    return {
        f"wta/{v}": {
            "ratio": saved[v] / saved["linear"],
            "time_ratio": median[v] / median["linear"],
            "ratio_vs_checkpoint": saved[v] / saved["checkpoint"],
            "time_ratio_vs_checkpoint": median[v] / median["checkpoint"],
            "saved_mb": saved[v] / 2**20,
            "ms": 1e3 * median[v],
        }
        for v in variants
        if v != "linear"
    }


# --------------------------------------------------------------------------------------------
# AltMin: time to accuracy
# --------------------------------------------------------------------------------------------


def altmin(device: str, n: int, k: int, soft_impute: bool = True) -> dict[str, dict]:
    from optforge.matrix.altmin import (
        ExactNormalEquations,
        SketchPreconditionedCG,
        make_incoherent_lowrank,
        relative_error,
        robust_altmin_complete,
    )

    target = 1e-6
    p = min(1.0, 4 * k * math.log(n) / n)
    gen = torch.Generator(device=device).manual_seed(0)
    problem = make_incoherent_lowrank(
        n, n, k, p=p, generator=gen, dtype=torch.float64, device=device
    )
    u_star, s_star, v_star, rows, cols, vals = problem

    def time_to_target(solver: Any, sweeps: int = 30) -> tuple[float, int]:
        errors: list[float] = []

        def stop(sweep: int, u_hat: Tensor, v: Tensor) -> bool:
            errors.append(relative_error(u_hat, v, u_star, s_star, v_star))
            return errors[-1] <= target

        _sync(device)
        start = time.perf_counter()
        robust_altmin_complete(
            rows,
            cols,
            vals,
            (n, n),
            k,
            n_iters=sweeps,
            solver=solver,
            tol=0.0,
            generator=torch.Generator(device=device).manual_seed(1),
            callback=stop,
        )
        _sync(device)
        elapsed = time.perf_counter() - start
        return (elapsed if errors and errors[-1] <= target else math.inf), len(errors)

    time_to_target(ExactNormalEquations(), 1)  # warm-up
    exact_s, exact_sweeps = time_to_target(ExactNormalEquations())
    robust_s, robust_sweeps = time_to_target(
        SketchPreconditionedCG(max_iter=2, generator=torch.Generator(device=device).manual_seed(2))
    )
    rows_out = {
        "altmin/robust-vs-exact": {
            "ratio": _ratio(robust_s, exact_s),
            "seconds": robust_s,
            "baseline_seconds": exact_s,
            "reached": float(math.isfinite(robust_s)),
            "sweeps": float(robust_sweeps),
            "baseline_sweeps": float(exact_sweeps),
        }
    }
    if not soft_impute:
        return rows_out
    soft_s = _soft_impute_time(problem, n, k, 1e-4)
    robust_soft_s, _ = time_to_target(
        SketchPreconditionedCG(max_iter=2, generator=torch.Generator(device=device).manual_seed(2))
    )
    rows_out["altmin/robust-vs-softimpute"] = {
        "ratio": _ratio(robust_soft_s, soft_s),
        "seconds": robust_soft_s,
        "baseline_seconds": soft_s,
    }
    return rows_out


def _soft_impute_time(problem: tuple, n: int, k: int, target: float) -> float:
    """Seconds until SoftImpute (the ``altmin-completion`` reproduction's baseline) reaches
    ``target`` along a warm-started λ path (CPU, numpy)."""
    import numpy as np

    from optforge.matrix.altmin import relative_error
    from optforge.repro.papers.altmin_completion import _soft_impute_path

    u_star, s_star, v_star, rows, cols, vals = (
        t.cpu().double() if t.is_floating_point() else t.cpu() for t in problem
    )
    mask = np.zeros((n, n), dtype=bool)
    mask[rows.numpy(), cols.numpy()] = True
    observed = np.zeros((n, n))
    observed[rows.numpy(), cols.numpy()] = vals.numpy()
    lam0 = 0.5 * float(np.linalg.norm(observed, 2))
    hit: list[float] = []
    start = time.perf_counter()

    def record(us: Any, v: Any) -> None:
        err = relative_error(torch.from_numpy(us), torch.from_numpy(v), u_star, s_star, v_star)
        if err <= target and not hit:
            hit.append(time.perf_counter() - start)

    _soft_impute_path(
        observed, mask, [lam0 * 0.5**i for i in range(10)], 2 * k, 50, 1e-5, 0, record
    )
    return hit[0] if hit else math.inf


# --------------------------------------------------------------------------------------------
# DFO: evaluations to target vs CMA-ES
# --------------------------------------------------------------------------------------------


def dfo(dim: int, budget: int, seeds: int) -> dict[str, dict]:
    from optforge.dfo import minimize

    scales = torch.logspace(0, 2, dim, dtype=torch.float64)  # condition number 1e4
    target = 1e-6

    def f(x: Tensor) -> float:
        return float((scales * (x - 1.0) ** 2).sum())

    def first_hit(values: list[float]) -> float:
        best = math.inf
        for i, v in enumerate(values, 1):
            best = min(best, v)
            if best <= target:
                return float(i)
        return math.inf

    x0 = torch.zeros(dim, dtype=torch.float64)
    evals: dict[str, list[float]] = {"cdsm": [], "cma-es": []}
    for seed in range(seeds):
        evals["cdsm"].append(first_hit(minimize(f, x0, budget=budget, generator=seed).values))
    if importlib.util.find_spec("cma") is not None:
        import cma

        for seed in range(seeds):
            values: list[float] = []
            es = cma.CMAEvolutionStrategy(
                x0.numpy(), 0.5, {"seed": seed + 1, "verbose": -9, "maxfevals": budget}
            )
            while not es.stop():
                xs = es.ask()
                fs = [f(torch.from_numpy(xi)) for xi in xs]
                values.extend(fs)
                es.tell(xs, fs)
                if min(values) <= target:
                    break
            evals["cma-es"].append(first_hit(values))
    med = {k: statistics.median(v) if v else math.nan for k, v in evals.items()}
    return {
        f"dfo/{name}": {
            "ratio": _ratio(med[name], med["cma-es"]),
            "evals_to_target": med[name],
            "baseline_evals": med["cma-es"],
        }
        for name in ("cdsm",)
    }


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------

CLAIMS = [
    Claim(
        name="wta-saves-activation-memory",
        statement="WTA-CRS (keep 30% of rows) saves fewer activation bytes than nn.Linear.",
        metric=lambda r: r.mean("wta/wta-0.3", "ratio"),
        op="<",
        threshold=1.0,
    ),
    Claim(
        name="robust-altmin-reaches-target",
        statement="Robust AltMin reaches relative error 1e-6 within 30 sweeps.",
        metric=lambda r: r.mean("altmin/robust-vs-exact", "reached"),
        op=">=",
        threshold=1.0,
    ),
]


def run_bench(device: str = "cpu", *, quick: bool = False, repeats: int | None = None) -> dict:
    """Run the whole suite on ``device`` and return its record (see the module docstring)."""
    scale = "quick" if quick else "full"
    repeats = repeats or (8 if quick else 20)
    start = time.perf_counter()
    sections: dict[str, dict[str, dict]] = {}
    sizes = SIZES[scale] if not device.startswith("cuda") else (1024, 4096)
    sections["step"] = optimizer_steps(device, sizes, repeats)
    width, batch = (128, 512) if quick else (256, 2048)
    sections["wta"] = wta_crs(device, width, batch, repeats)
    n, k = (200, 4) if quick else (1000, 10)
    sections["altmin"] = altmin(device, n, k, soft_impute=not quick)
    dim, budget, seeds = (6, 3000, 2) if quick else (10, 20000, 5)
    sections["dfo"] = dfo(dim, budget, seeds)
    wall = time.perf_counter() - start
    rows = {name: row for section in sections.values() for name, row in section.items()}
    metrics = {name: {0: row} for name, row in rows.items()}
    results = Results(metrics)
    claims = [c.evaluate(results, scale) for c in CLAIMS]
    config = {
        "step_sizes": list(sizes),
        "step_batch": 64,
        "wta_width": width,
        "wta_batch": batch,
        "altmin_n": n,
        "altmin_k": k,
        "dfo_dim": dim,
        "dfo_budget": budget,
        "dfo_seeds": seeds,
        "repeats": repeats,
        "cma_available": importlib.util.find_spec("cma") is not None,
    }
    record = {
        "schema": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "name": "bench",
        "title": "optforge performance suite (ratios vs the baselines, one process)",
        "arxiv": "n/a",
        "spec": "_anchors.md",
        "scale": scale,
        "seeds": [0],
        "config": config,
        "run_info": {
            **environment_info(device, torch.get_num_threads()),
            "precision": "float32 (altmin, dfo: float64)",
            "effective_batch_size": 64,
            "world_size": 1,
            "executor": "local",
            "wall_time_s": wall,
            "peak_memory_mb": (
                torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
            ),
        },
        "metrics": {m: {"0": v[0]} for m, v in metrics.items()},
        "trials": [{"method": "bench", "seed": 0, "wall_time_s": wall, "peak_memory_mb": 0.0}],
        "claims": claims,
        "all_held": all(c["held"] for c in claims),
        "plot": {"x": "step", "y": ["ratio"], "logy": True},
    }
    return to_json_safe(record)
