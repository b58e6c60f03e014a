"""Step-size rules shared by the first-order learners (validation, the baselines' step)."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from optforge._core import check_positive

if TYPE_CHECKING:
    from optforge.online.learners.baselines import FTRL, OGD

__all__: list[str] = []

Step = Literal["adaptive", "strongly_convex", "fixed"]
Hint = Literal["last_grad", "zero"]


def _warn_no_smoothness(name: str) -> None:
    warnings.warn(
        f"{name}: no smoothness given, so the adaptive step is not capped at 1/(4L); early steps "
        "may be too large (pass smoothness=L)",
        UserWarning,
        stacklevel=3,
    )


def _check_step(
    step: str, lr: Any, strong_convexity: float | None, x0: Tensor
) -> tuple[str, Tensor | float | None, float | None]:
    """Validate the step-size rule; returns ``(step, lr, strong_convexity)``."""
    if step not in ("adaptive", "strongly_convex", "fixed"):
        raise ValueError(f"step must be 'adaptive', 'strongly_convex' or 'fixed', got {step!r}")
    if step == "fixed":
        if lr is None:
            raise ValueError("lr is required for step='fixed'")
        if isinstance(lr, Tensor):
            batch = x0.shape[:-1]
            if lr.shape != batch:
                raise ValueError(
                    f"lr tensor must have the batch shape {tuple(batch)}, got {tuple(lr.shape)}"
                )
            if not bool(torch.isfinite(lr).all()) or bool((lr <= 0).any()):
                raise ValueError("lr must be finite and > 0 everywhere")
            lr = lr.to(x0).unsqueeze(-1)
        else:
            lr = float(check_positive("lr", lr))
    elif lr is not None:
        raise ValueError(f"lr is only used with step='fixed', got lr={lr!r} with step={step!r}")
    if step == "strongly_convex":
        if strong_convexity is None:
            raise ValueError("strong_convexity is required for step='strongly_convex'")
        strong_convexity = float(check_positive("strong_convexity", strong_convexity))
    return step, lr, strong_convexity


def _baseline_eta(learner: OGD | FTRL, t: int) -> Tensor | float:
    """The baselines' step ``D/(G_t√t)`` (or ``1/(λt)``, or ``lr``) after ``t`` rounds."""
    if learner.step == "fixed":
        return learner.lr
    if learner.step == "strongly_convex":
        return 1.0 / (learner.strong_convexity * t)
    if learner.grad_bound is not None:
        return learner.domain.diameter / (learner.grad_bound * math.sqrt(max(t, 1)))
    g = torch.clamp(learner.grad_max, min=learner._tiny)
    # = D / (g√t) as Tensor.__rdiv__ computes it, without its Python wrapper
    return (g * math.sqrt(max(t, 1))).reciprocal() * learner.domain.diameter
