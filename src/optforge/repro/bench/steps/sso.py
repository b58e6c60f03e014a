"""SSO: ``opt.step(forward=, target_loss=)`` with one oracle call and ``m = 3`` inner steps
(rows ``step[...]/sso`` with fixed inner steps and ``step[...]/sso_armijo`` with the official
Armijo inner loop), and the plain SGD step they are measured against (row ``step[...]/sgd``).

Goal (issue #29): an SSO step costs at most ``1.5·(1 + m)`` SGD steps, i.e. ratio(sso) /
ratio(sgd) <= 6 with m = 3: the (1 + m) forward–backward passes and nothing else of weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from optforge.optim import SSO
from optforge.repro.bench.step_time import StepProblem, first_order_step, register_step

__all__ = ["sgd", "sso", "sso_armijo"]

INNER_STEPS = 3


@register_step("sgd", order=68)
def sgd(problem: StepProblem) -> Callable[[], None]:
    """``torch.optim.SGD(lr=1e-3)``: the reference step of SSO's (1 + m) goal."""
    return first_order_step(problem, lambda m: torch.optim.SGD(m.parameters(), lr=1e-3))


def _sso_step(problem: StepProblem, inner: str) -> Callable[[], None]:
    model = problem.model()
    opt = SSO(model.parameters(), lr=1e-3, target_lr=0.1, inner_steps=INNER_STEPS, inner=inner)
    return lambda: opt.step(
        forward=lambda: model(problem.x).squeeze(-1),
        target_loss=lambda z: F.mse_loss(z, problem.y),
    )


@register_step("sso", order=70)
def sso(problem: StepProblem) -> Callable[[], None]:
    """``SSO(lr=1e-3, target_lr=0.1, inner_steps=3, inner="sgd")``: no host read in the loop."""
    return _sso_step(problem, "sgd")


@register_step("sso_armijo", order=71)
def sso_armijo(problem: StepProblem) -> Callable[[], None]:
    """``SSO(lr=1e-3, target_lr=0.1, inner_steps=3)`` (Armijo): one host read per trial."""
    return _sso_step(problem, "armijo")
