"""First-order optimizers in the ``torch.optim`` call form: ``loss.backward(); opt.step()``.

Timed against the same step with ``torch.optim.Adam(foreach=True)`` (rows
``step[small|large]/<name>``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from optforge.optim import AdaGradNorm, Langevin, NoisyOptimizer, OptimisticSGD
from optforge.repro.bench.step_time import StepProblem, first_order_step, register_step

__all__ = ["adagrad_norm", "langevin", "noisy_adam", "optimistic_sgd"]


@register_step("optimistic_sgd", order=10)
def optimistic_sgd(problem: StepProblem) -> Callable[[], None]:
    """``OptimisticSGD(lr=1e-3)``."""
    return first_order_step(problem, lambda m: OptimisticSGD(m.parameters(), lr=1e-3))


@register_step("adagrad_norm", order=20)
def adagrad_norm(problem: StepProblem) -> Callable[[], None]:
    """``AdaGradNorm(lr=0.1)``."""
    return first_order_step(problem, lambda m: AdaGradNorm(m.parameters(), lr=0.1))


@register_step("noisy_adam", order=30)
def noisy_adam(problem: StepProblem) -> Callable[[], None]:
    """``NoisyOptimizer(Adam(foreach=True), eta=1e-4)``: annealed Gaussian gradient noise."""
    return first_order_step(
        problem,
        lambda m: NoisyOptimizer(
            torch.optim.Adam(m.parameters(), 1e-3, foreach=True), eta=1e-4, seed=0
        ),
    )


@register_step("langevin", order=40)
def langevin(problem: StepProblem) -> Callable[[], None]:
    """``Langevin(lr=1e-4, beta=1e4)``: SGD plus one flat Gaussian draw (finiteness check on).

    On a CPU the draw (mt19937 + Box–Muller) costs about as much as Adam's whole update.
    """
    return first_order_step(problem, lambda m: Langevin(m.parameters(), lr=1e-4, beta=1e4, seed=0))
