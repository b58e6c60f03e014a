"""SSO: ``opt.step(forward=, target_loss=)`` (one oracle call and 3 inner steps; row
``step[...]/sso``)."""

from __future__ import annotations

from collections.abc import Callable

from torch.nn import functional as F

from optforge.optim import SSO
from optforge.repro.bench.step_time import StepProblem, register_step

__all__ = ["sso"]


@register_step("sso", order=70)
def sso(problem: StepProblem) -> Callable[[], None]:
    """``SSO(lr=1e-3, target_lr=0.1, inner_steps=3, inner="sgd")``."""
    model = problem.model()
    opt = SSO(model.parameters(), lr=1e-3, target_lr=0.1, inner_steps=3, inner="sgd")
    return lambda: opt.step(
        forward=lambda: model(problem.x).squeeze(-1),
        target_loss=lambda z: F.mse_loss(z, problem.y),
    )
