"""Sven: ``opt.step(model=, loss_fn=, inputs=, targets=)`` (per-example Jacobian, k = 32,
float32 solver; row ``step[...]/sven``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optforge.optim import Sven
from optforge.repro.bench.step_time import StepProblem, register_step

__all__ = ["sven"]


@register_step("sven", order=60)
def sven(problem: StepProblem) -> Callable[[], None]:
    """``Sven(lr=0.1, k=32, solver_dtype=float32)`` on the per-example squared errors."""
    model = problem.model()
    opt = Sven(model.parameters(), lr=0.1, k=32, solver_dtype=torch.float32)
    return lambda: opt.step(
        model=model, loss_fn=problem.per_example, inputs=problem.x, targets=problem.y
    )
