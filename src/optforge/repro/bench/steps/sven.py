"""Sven: ``opt.step(model=, loss_fn=, inputs=, targets=)`` (k = 32, float32 solver).

Rows ``step[...]/sven`` (the default ``path="auto"``: the Gram path, as this MLP has only
``nn.Linear`` layers — one backward, the 64 × 64 Gram matrix from the layers' inputs and
output gradients, ``eigh``, one weighted gradient) and ``step[...]/sven_jacobian``
(``path="jacobian"``: the 64 × P per-example Jacobian, the implementation before the Gram path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from optforge.optim import Sven
from optforge.repro.bench.step_time import StepProblem, register_step

__all__ = ["sven", "sven_jacobian"]


def _sven_step(problem: StepProblem, path: str) -> Callable[[], None]:
    model = problem.model()
    opt = Sven(model.parameters(), lr=0.1, k=32, solver_dtype=torch.float32, path=path)
    return lambda: opt.step(
        model=model, loss_fn=problem.per_example, inputs=problem.x, targets=problem.y
    )


@register_step("sven", order=60)
def sven(problem: StepProblem) -> Callable[[], None]:
    """``Sven(lr=0.1, k=32, solver_dtype=float32)`` on the per-example squared errors (Gram)."""
    return _sven_step(problem, "auto")


@register_step("sven_jacobian", order=61)
def sven_jacobian(problem: StepProblem) -> Callable[[], None]:
    """The same with ``path="jacobian"`` (the per-example Jacobian, the reference)."""
    return _sven_step(problem, "jacobian")
