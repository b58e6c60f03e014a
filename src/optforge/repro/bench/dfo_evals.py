"""Derivative-free optimization: objective evaluations to a target, cDSM vs CMA-ES.

Row ``dfo/cdsm``: the median over seeds of the number of evaluations until the best value of
the ill-conditioned quadratic ``f(x) = Σ_i s_i (x_i − 1)²`` (``s`` log-spaced from 1 to 100,
condition number 1e4, start at 0) drops below 1e-6, for cDSM (``optforge.dfo.minimize``) and
for CMA-ES (``cma``, the ``dfo`` extra; σ₀ = 0.5). ``ratio`` is cDSM's count over CMA-ES's
(NaN without ``cma``).
"""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optforge.repro.bench.registry import BenchEntry, register_bench
from optforge.repro.timing import cost_ratio, iterations_to_target

__all__ = ["dfo"]


def dfo(dim: int, budget: int, seeds: int) -> dict[str, dict]:
    """The ``dfo/cdsm`` row in dimension ``dim`` with ``budget`` evaluations per run."""
    from optforge.dfo import minimize

    scales = torch.logspace(0, 2, dim, dtype=torch.float64)  # condition number 1e4
    target = 1e-6

    def f(x: Tensor) -> float:
        return float((scales * (x - 1.0) ** 2).sum())

    x0 = torch.zeros(dim, dtype=torch.float64)
    evals: dict[str, list[float]] = {"cdsm": [], "cma-es": []}
    for seed in range(seeds):
        run = minimize(f, x0, budget=budget, generator=seed)
        evals["cdsm"].append(iterations_to_target(run.values, target))
    if _cma_available():
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
            evals["cma-es"].append(iterations_to_target(values, target))
    med = {k: statistics.median(v) if v else float("nan") for k, v in evals.items()}
    return {
        f"dfo/{name}": {
            "ratio": cost_ratio(med[name], med["cma-es"]),
            "evals_to_target": med[name],
            "baseline_evals": med["cma-es"],
        }
        for name in ("cdsm",)
    }


def _cma_available() -> bool:
    return importlib.util.find_spec("cma") is not None


def _run(config: Mapping[str, Any], device: str, scale: str, repeats: int) -> dict[str, dict]:
    return dfo(config["dim"], config["budget"], config["seeds"])


register_bench(
    BenchEntry(
        name="dfo",
        title="objective evaluations to 1e-6 on an ill-conditioned quadratic, cDSM / CMA-ES",
        run=_run,
        configs={
            "quick": {"dim": 6, "budget": 3000, "seeds": 2},
            "full": {"dim": 10, "budget": 20000, "seeds": 5},
        },
        info=lambda: {"cma_available": _cma_available()},
        order=40,
    )
)
