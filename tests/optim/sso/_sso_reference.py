"""The SSO inner loop as it was before issue #29 item 3 (a host read per inner step), kept as
the reference of the parity tests in ``test_sso_passes.py``. Not a test module."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optforge.optim import SSO
from optforge.optim.sso.optimizer import _MIN_STEP
from optforge.optim.sso.surrogate import TargetSurrogateLoss


class ReferenceSSO(SSO):
    """``SSO`` with the reference (pre-#29) inner loop, copied verbatim."""

    def _inner_loop(
        self,
        group: dict[str, Any],
        state: dict[str, Any],
        params: list[Tensor],
        lrs: list[float],
        forward: Callable[[], Tensor],
        out: Tensor,
        surrogate: TargetSurrogateLoss,
    ) -> None:
        shape = out.shape
        armijo = group["inner"] == "armijo"
        kappa = 1.0
        max_lr = max(lrs)
        value = surrogate(out)
        trace = [float(value.detach())]
        for k in range(group["inner_steps"]):
            grads = torch.autograd.grad(value, params, allow_unused=True)
            pairs = zip(params, grads, strict=True)
            dirs = [torch.zeros_like(p) if g is None else g for p, g in pairs]
            grad_norm = math.sqrt(sum(float((d.double() ** 2).sum()) for d in dirs))
            if not math.isfinite(grad_norm):
                raise FloatingPointError(
                    f"non-finite gradient (NaN or inf) of the surrogate w.r.t. the parameters at "
                    f"inner step {k + 1}: the backward pass of forward() is not finite"
                )
            if grad_norm <= group["inner_tol"]:
                break
            last = k == group["inner_steps"] - 1
            if not armijo:
                with torch.no_grad():
                    for p, d, lr in zip(params, dirs, lrs, strict=True):
                        p.add_(d, alpha=-lr)
                state["inner_steps"] += 1
                if last:
                    break
                new_value = surrogate(self._forward(forward, shape))
                if float(new_value.detach()) > trace[-1]:
                    state["surrogate_increases"] += 1
                value = new_value
                trace.append(float(value.detach()))
                continue
            kappa *= group["expand"]
            decrease = sum(
                lr * float((d.double() ** 2).sum()) for d, lr in zip(dirs, lrs, strict=True)
            )
            start = [p.detach().clone() for p in params]
            base = float(value.detach())
            accepted = False
            tries = nonfinite = 0
            for _ in range(group["max_backtracks"]):
                with torch.no_grad():
                    for p, p0, d, lr in zip(params, start, dirs, lrs, strict=True):
                        torch.add(p0, d, alpha=-kappa * lr, out=p)
                # Trial points keep their graph so the accepted one serves the next inner step.
                trial = surrogate(self._forward(forward, shape, trial=True))
                trial_value = float(trial.detach())
                tries += 1
                nonfinite += not math.isfinite(trial_value)
                if trial_value <= base - group["armijo_c"] * kappa * decrease:
                    accepted = True
                    break
                state["backtracks"] += 1
                kappa *= group["armijo_beta"]
                if kappa * max_lr < _MIN_STEP:
                    break
            if not accepted and nonfinite == tries:
                raise FloatingPointError(
                    f"inner step {k + 1}: forward() returned non-finite targets at every one of "
                    f"{tries} Armijo trial points; the step was not taken"
                )
            if not accepted:
                with torch.no_grad():
                    for p, p0 in zip(params, start, strict=True):
                        p.copy_(p0)
                break
            state["inner_steps"] += 1
            value = trial
            trace.append(float(value.detach()))
        state["kappa"] = kappa
        state["surrogate_trace"] = trace
        for p in params:
            if not torch.isfinite(p).all():
                raise FloatingPointError(
                    "SSO produced non-finite parameters (the inner step overflowed); lower lr "
                    "(inner step) or target_lr"
                )
