r"""The ``torch.optim`` form of SSO: one target gradient, then ``inner_steps`` surrogate steps.

Each outer step makes one oracle call (:func:`.target_gradient` at the detached batch targets),
builds the :class:`.TargetSurrogateLoss` of the step and minimises it over the parameters on the
same batch.

Inner loop (official ``sgd_fmdopt.py`` + ``lsopt.py``): ``m = inner_steps`` steps of gradient
descent on :math:`\tilde g_t` with an Armijo backtracking line search. The step of parameter group
``g`` is :math:`\kappa\,\mathrm{lr}_g`; :math:`\kappa` is reset to 1 at every outer step (the
official code resets the inner step to 10, the default ``lr``), multiplied by ``expand`` before
every inner step and by ``armijo_beta`` on every backtrack until

.. math::

    \tilde g_t(\theta - \kappa D d) \le \tilde g_t(\theta) - c\,\kappa\,\langle d, D d\rangle,
    \qquad D = \mathrm{diag}(\mathrm{lr}_g),\ d = \nabla\tilde g_t(\theta).

With one group this is the official rule :math:`\alpha = \kappa\,\mathrm{lr}`,
:math:`\tilde g(\theta-\alpha d) \le \tilde g(\theta) - c\alpha\lVert d\rVert^2`. The inner
loop stops early when :math:`\lVert d\rVert \le` ``inner_tol``. ``inner="sgd"`` takes fixed steps
:math:`\theta_g \leftarrow \theta_g - \mathrm{lr}_g d_g` instead; with ``inner_steps=1`` that is
exactly ``torch.optim.SGD(lr)`` on the batch loss (the surrogate's gradient at
:math:`\theta_t` is the loss gradient).

Cost (issue #29): the Armijo loop reads the host once per trial point (the acceptance test) and
reuses the accepted trial's forward for the next backward, so ``m`` accepted inner steps cost
``1 + m`` forwards and ``m`` backwards. The fixed-step loop reads the host once, after the loop:
there ``inner_tol`` freezes the parameters (zero steps) instead of leaving the loop, and
non-finite gradients or targets raise after the loop (the step then restores everything).

The target step :math:`\eta_t` is chosen by :mod:`.target_step` (a schedule, a line search in
target space or AdaGrad-norm).

Choices:

* ``lr`` is the **inner** step (Armijo's initial step, or the fixed step of ``inner="sgd"``), per
  param group, so LR schedulers drive it as they drive SGD's lr; :math:`\eta` lives in target space
  and is shared by all groups (one surrogate): the target-space options must agree across groups.
* ``expand`` is the per-inner-step growth factor (official: ``2 ** (1 / batches_per_epoch)``,
  which the optimizer cannot know); default 1.0.
* A failed line search (no acceptable step in ``max_backtracks`` tries) leaves the parameters
  where they are and ends the inner loop, so Armijo inner steps never increase the surrogate.
* Only the batch regulariser (official) and the Euclidean divergence are implemented.

Scaling note for porting official configs: the code's surrogate is
``mean(G·f / eta_code + (f − z)²)`` with ``eta_code = 1/stepsize`` and ``G`` from a sum-reduced
loss, whose target-space minimiser is ``z − (stepsize/2) G``: use ``target_lr = stepsize / 2``.

Example::

    opt = SSO(model.parameters(), target_lr=1.0, inner_steps=10)
    loss = opt.step(forward=lambda: model(x), target_loss=lambda z: F.cross_entropy(z, y))
    opt.cost(oracle_cost=100.0)   # cost model: oracle calls vs forward passes
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_device,
    check_in_range,
    check_nonnegative,
    check_not_meta,
    check_positive,
    check_positive_int,
)
from optforge._core.sharding import refuse_dtensor, refuse_dtensor_group
from optforge.optim.sso.surrogate import (
    _REDUCTIONS,
    SumOrMean,
    TargetSurrogateLoss,
    _loss_and_target_grad,
    _reduction_weight,
)
from optforge.optim.sso.target_step import _choose_eta, _scheduled_eta

__all__ = ["SSO"]

_SCHEDULES = ("constant", "sqrt", "exp")
_INNER = ("armijo", "sgd")
# Keys that define the single target-space surrogate and so must agree across param groups.
_SHARED_KEYS = (
    "target_lr",
    "inner_steps",
    "schedule",
    "total_steps",
    "target_line_search",
    "ls_c",
    "ls_beta",
    "ls_expand",
    "adaptive",
    "inner",
    "armijo_c",
    "armijo_beta",
    "expand",
    "inner_tol",
    "max_backtracks",
    "loss_reduction",
)
_MIN_STEP = 1e-6  # official minimum inner step before the line search gives up


class SSO(torch.optim.Optimizer):
    """Stochastic surrogate optimization: one target gradient, ``inner_steps`` surrogate steps.

    See the module docstring for the inner loop, the target step and the choices made.

    Args:
        params: parameters or param groups (only ``lr`` may differ between groups).
        lr: inner step: Armijo's initial step (reset every outer step; official 10) or the fixed
            step of ``inner="sgd"``. Driven by ``torch.optim.lr_scheduler`` schedulers.
        target_lr: the target step :math:`\\eta_0 > 0` (per example, in target units).
        inner_steps: ``m >= 1``, cheap surrogate steps per oracle call.
        schedule: ``"constant"``, ``"sqrt"`` (η0/√t) or ``"exp"`` (η0·T^(−t/T)).
        total_steps: ``T`` for ``schedule="exp"`` (required there).
        target_line_search: choose η by Armijo line search in target space (needs
            ``target_loss``).
        ls_c: that line search's Armijo constant.
        ls_beta: that line search's shrink factor.
        ls_expand: that line search's growth factor.
        adaptive: ``None`` or ``"adagrad_norm"`` (AdaGrad-norm in target space).
        inner: ``"armijo"`` (official) or ``"sgd"`` (fixed steps).
        armijo_c: inner Armijo constant.
        armijo_beta: inner backtracking factor.
        expand: growth factor of the inner step before every inner step (>= 1).
        inner_tol: stop the inner loop when ‖∇ surrogate‖ <= inner_tol (``inner="sgd"``: take
            zero steps from then on).
        max_backtracks: line-search tries per inner step.
        loss_reduction: ``"mean"`` (the target loss averages over the first dimension) or
            ``"sum"``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 10.0,
        target_lr: float = 1.0,
        inner_steps: int = 10,
        schedule: Literal["constant", "sqrt", "exp"] = "constant",
        total_steps: int | None = None,
        target_line_search: bool = False,
        ls_c: float = 0.5,
        ls_beta: float = 0.9,
        ls_expand: float = 2.0,
        adaptive: Literal["adagrad_norm"] | None = None,
        inner: Literal["armijo", "sgd"] = "armijo",
        armijo_c: float = 0.1,
        armijo_beta: float = 0.9,
        expand: float = 1.0,
        inner_tol: float = 1e-6,
        max_backtracks: int = 100,
        loss_reduction: SumOrMean = "mean",
    ) -> None:
        defaults = {
            "lr": lr,
            "target_lr": target_lr,
            "inner_steps": inner_steps,
            "schedule": schedule,
            "total_steps": total_steps,
            "target_line_search": target_line_search,
            "ls_c": ls_c,
            "ls_beta": ls_beta,
            "ls_expand": ls_expand,
            "adaptive": adaptive,
            "inner": inner,
            "armijo_c": armijo_c,
            "armijo_beta": armijo_beta,
            "expand": expand,
            "inner_tol": inner_tol,
            "max_backtracks": max_backtracks,
            "loss_reduction": loss_reduction,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group first (its values; the target-space keys must match), then add."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        param_group = refuse_dtensor_group(param_group, _DTENSOR_MESSAGE)
        merged = {**self.defaults, **param_group}
        _validate(merged)
        if self.param_groups:
            first = self.param_groups[0]
            for key in _SHARED_KEYS:
                if merged[key] != first[key]:
                    raise ValueError(
                        f"{key} must be the same in every param group (SSO builds one surrogate "
                        f"in target space); got {merged[key]!r} and {first[key]!r}. Only lr may "
                        "differ between groups."
                    )
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ state and cost model
    @property
    def _global(self) -> dict[str, Any]:
        """Optimizer-wide state, kept in the first parameter's state (as ``torch.optim.LBFGS``)."""
        state = self.state[self.param_groups[0]["params"][0]]
        if not state:
            state.update(
                step=0,
                oracle_calls=0,
                inner_steps=0,
                forward_evals=0,
                backtracks=0,
                target_loss_evals=0,
                surrogate_increases=0,
                eta=float("nan"),
                kappa=1.0,
                adagrad_sum=0.0,
                ls_eta=None,
                surrogate_trace=[],
            )
        return state

    @property
    def counters(self) -> dict[str, int]:
        """Oracle calls, inner steps, forward passes, backtracks, line-search loss evaluations."""
        g = self._global
        keys = ("step", "oracle_calls", "inner_steps", "forward_evals", "backtracks")
        return {k: int(g[k]) for k in (*keys, "target_loss_evals", "surrogate_increases")}

    def cost(self, oracle_cost: float, forward_cost: float = 1.0) -> float:
        """Cost model ``oracle_cost · oracle_calls + forward_cost · forward_evals``.

        A forward pass (with or without its backward) is the unit of cheap work; set
        ``oracle_cost`` to what one expensive target gradient costs in the same unit.
        """
        check_nonnegative("oracle_cost", oracle_cost)
        check_nonnegative("forward_cost", forward_cost)
        g = self._global
        return oracle_cost * g["oracle_calls"] + forward_cost * g["forward_evals"]

    def target_step(self, t: int | None = None) -> float:
        """η_t of the schedule (``t``: default the next step); unused with line search/AdaGrad."""
        group = self.param_groups[0]
        t = self._global["step"] + 1 if t is None else t
        return _scheduled_eta(group["target_lr"], group["schedule"], group["total_steps"], t)

    # ------------------------------------------------------------------ the step
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], tuple[Callable[[], Tensor], Callable[[Tensor], Tensor]]]
        | None = None,
        *,
        forward: Callable[[], Tensor] | None = None,
        target_loss: Callable[[Tensor], Tensor] | None = None,
        target_grad: Callable[[Tensor], Tensor] | Tensor | None = None,
    ) -> Tensor | None:
        """One outer step: one oracle call, then up to ``inner_steps`` surrogate steps.

        Args:
            closure: optional; returns ``(forward, target_loss)``.
            forward: recomputes the batch targets ``f(θ)`` with autograd (same batch each call).
            target_loss: ``z -> scalar loss`` on targets; called once, on detached targets.
            target_grad: instead of ``target_loss``, a black-box gradient: a tensor shaped like
                the targets or a callable ``z -> G``.

        Returns:
            The batch loss at θ_t (``None`` with ``target_grad``).

        Raises:
            FloatingPointError: non-finite targets, target gradient or surrogate gradient
                (the message names which). A step that raises — for this or any other reason,
                including an exception from ``forward`` — leaves the parameters and the
                optimizer's state (counters, η, traces) exactly as they were.
        """
        refuse_dtensor((p for g in self.param_groups for p in g["params"]), _DTENSOR_MESSAGE)
        forward, target_loss = self._resolve(closure, forward, target_loss, target_grad)
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        if not params:
            raise ValueError("SSO has no parameter that requires grad")
        anchor = self.param_groups[0]["params"][0]
        saved_state = _copy_global(self.state[anchor]) if anchor in self.state else None
        saved_params = [p.detach().clone() for p in params]
        try:
            return self._step(forward, target_loss, target_grad)
        except BaseException:
            with torch.no_grad():
                for p, p0 in zip(params, saved_params, strict=True):
                    p.copy_(p0)
            if saved_state is None:
                self.state.pop(anchor, None)
            else:
                self.state[anchor] = saved_state
            raise

    def _step(
        self,
        forward: Callable[[], Tensor],
        target_loss: Callable[[Tensor], Tensor] | None,
        target_grad: Callable[[Tensor], Tensor] | Tensor | None,
    ) -> Tensor | None:
        group0 = self.param_groups[0]
        for key in _SHARED_KEYS:
            for group in self.param_groups[1:]:
                if group[key] != group0[key]:
                    raise ValueError(f"{key} must be the same in every param group")
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        lrs = [float(g["lr"]) for g in self.param_groups for p in g["params"] if p.requires_grad]
        if not params:
            raise ValueError("SSO has no parameter that requires grad")
        state = self._global

        # 1. targets at θ_t (graph kept for the first inner step) and the one oracle call.
        out = self._forward(forward, None)
        if not out.requires_grad:
            raise ValueError(
                "forward() output does not depend on the parameters (no gradient path): it must "
                "recompute the model's targets from the optimized parameters"
            )
        z_t = out.detach()
        if target_loss is not None:
            loss_t, grad = _loss_and_target_grad(target_loss, z_t)
        else:
            loss_t = None
            grad = target_grad(z_t) if callable(target_grad) else target_grad
            if not isinstance(grad, Tensor):
                raise TypeError(f"target_grad must be a tensor, got {type(grad).__name__}")
            check_not_meta("target_grad", grad)
            check_device("target_grad", grad, z_t.device, owner="the targets")
            if grad.shape != z_t.shape:
                raise ValueError(
                    f"target_grad has shape {tuple(grad.shape)} but the model's targets have "
                    f"shape {tuple(z_t.shape)}"
                )
            grad = grad.detach().to(z_t.dtype)
        state["oracle_calls"] += 1
        if loss_t is not None and not bool(torch.isfinite(loss_t)):
            raise FloatingPointError(
                f"target_loss returned a non-finite loss ({float(loss_t)}) at the current targets"
            )
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                "non-finite target gradient (NaN or inf) at the current targets"
            )
        state["step"] += 1

        # 2. the target step η_t.
        reduction = group0["loss_reduction"]
        weight = _reduction_weight(z_t, reduction)
        eta = _choose_eta(group0, state, z_t, grad, loss_t, target_loss, weight)
        state["eta"] = eta
        # The constant ℓ_S(z_t) is left out: it cancels in every comparison, and without it
        # float32 keeps the small decreases of the line search (the trace is relative to it).
        surrogate = TargetSurrogateLoss(z_t, grad, eta, reduction)

        # 3. the inner loop on the surrogate (same batch, no oracle call).
        self._inner_loop(group0, state, params, lrs, forward, out, surrogate)
        return loss_t

    def _resolve(
        self,
        closure: Any,
        forward: Any,
        target_loss: Any,
        target_grad: Any,
    ) -> tuple[Callable[[], Tensor], Callable[[Tensor], Tensor] | None]:
        if closure is not None:
            if forward is not None or target_loss is not None or target_grad is not None:
                raise ValueError("pass either a closure or forward=/target_loss=, not both")
            with torch.enable_grad():
                returned = closure()
            if not (isinstance(returned, tuple) and len(returned) == 2):
                raise TypeError(
                    "SSO's closure must return a pair (forward, target_loss) of callables: "
                    "forward() -> targets f(θ), target_loss(z) -> scalar loss; got "
                    f"{type(returned).__name__}"
                )
            forward, target_loss = returned
        if forward is None:
            raise ValueError(
                "SSO.step needs forward= and target_loss= (or target_grad=), or a closure "
                "returning (forward, target_loss)"
            )
        if not callable(forward):
            raise TypeError(f"forward must be callable, got {type(forward).__name__}")
        if (target_loss is None) == (target_grad is None):
            raise ValueError("pass exactly one of target_loss and target_grad")
        if target_loss is not None and not callable(target_loss):
            raise TypeError(f"target_loss must be callable, got {type(target_loss).__name__}")
        return forward, target_loss

    def _forward(
        self,
        forward: Callable[[], Tensor],
        shape: torch.Size | None,
        trial: bool = False,
        device: torch.device | None = None,
    ) -> Tensor:
        """``forward()`` checked: a tensor, of ``shape`` and on ``device`` when given (the inner
        loop's trial points; the surrogate then takes them unchecked)."""
        with torch.enable_grad():
            out = forward()
        self._global["forward_evals"] += 1
        if not isinstance(out, Tensor):
            raise TypeError(f"forward() must return a tensor of targets, got {type(out).__name__}")
        if shape is not None and out.shape != shape:
            raise ValueError(
                f"forward() returned shape {tuple(out.shape)} but the targets of this step have "
                f"shape {tuple(shape)}: the model's output must match the targets"
            )
        if device is not None and out.device != device:  # cheap test; the full check names it
            check_device("targets", out, device, owner="the snapshot")
        if not trial and not torch.isfinite(out.detach()).all():
            where = "at the current parameters" if shape is None else "after an inner step"
            hint = "" if shape is None else " (the inner step lr may be too large)"
            raise FloatingPointError(f"forward() returned non-finite targets {where}{hint}")
        return out

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
        if group["inner"] == "armijo":
            self._armijo_loop(group, state, params, lrs, forward, out, surrogate)
        else:
            self._fixed_loop(group, state, params, lrs, forward, out, surrogate)

    def _armijo_loop(
        self,
        group: dict[str, Any],
        state: dict[str, Any],
        params: list[Tensor],
        lrs: list[float],
        forward: Callable[[], Tensor],
        out: Tensor,
        surrogate: TargetSurrogateLoss,
    ) -> None:
        """Armijo inner steps: one host read per trial point (the acceptance test), none else.

        The first trial of an inner step is evaluated before the host sees the step's gradient
        norm: one read then brings the trial value, the per-tensor squared norms (the
        ``inner_tol`` test and the Armijo decrease) and, at the first inner step, the starting
        surrogate value. The accepted trial's forward graph serves the next inner step's
        backward, so an inner step without backtracking costs one forward and one backward.
        """
        shape, device = out.shape, out.device
        kappa = 1.0
        max_lr = max(lrs)
        value = surrogate(out)  # checked once per step; the trial points below go unchecked
        value_of = surrogate._unchecked()
        trace: list[float] = []
        for k in range(group["inner_steps"]):
            grads = torch.autograd.grad(value, params, allow_unused=True)
            pairs = zip(params, grads, strict=True)
            dirs = [torch.zeros_like(p) if g is None else g for p, g in pairs]
            squares = _norms(dirs, value.device, torch.float64) ** 2
            kappa_before = kappa
            kappa *= group["expand"]
            start = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, p0, d, lr in zip(params, start, dirs, lrs, strict=True):
                    torch.add(p0, d, alpha=-kappa * lr, out=p)
            # Trial points keep their graph so the accepted one serves the next inner step.
            trial = value_of(self._forward(forward, shape, True, device))
            head = [trial.detach().double().reshape(1), squares]
            if not trace:
                head.append(value.detach().double().reshape(1))
            host = torch.cat(head).tolist()  # the one host read of this trial
            trial_value = host[0]
            sq = host[1 : 1 + len(dirs)]
            if not trace:
                trace.append(host[-1])
            grad_norm = math.sqrt(sum(sq))
            if not math.isfinite(grad_norm):
                raise FloatingPointError(
                    f"non-finite gradient (NaN or inf) of the surrogate w.r.t. the parameters at "
                    f"inner step {k + 1}: the backward pass of forward() is not finite"
                )
            if grad_norm <= group["inner_tol"]:
                _restore(params, start)
                kappa = kappa_before
                break
            decrease = sum(lr * s for s, lr in zip(sq, lrs, strict=True))
            base = trace[-1]
            accepted = False
            tries = nonfinite = 0
            for attempt in range(group["max_backtracks"]):
                if attempt:
                    with torch.no_grad():
                        for p, p0, d, lr in zip(params, start, dirs, lrs, strict=True):
                            torch.add(p0, d, alpha=-kappa * lr, out=p)
                    trial = value_of(self._forward(forward, shape, True, device))
                    trial_value = float(trial.detach())  # the acceptance test's host read
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
                _restore(params, start)
                break
            state["inner_steps"] += 1
            value = trial
            trace.append(trial_value)
        state["kappa"] = kappa
        state["surrogate_trace"] = trace
        if not bool(_all_finite(params)):
            raise _overflow_error()

    def _fixed_loop(
        self,
        group: dict[str, Any],
        state: dict[str, Any],
        params: list[Tensor],
        lrs: list[float],
        forward: Callable[[], Tensor],
        out: Tensor,
        surrogate: TargetSurrogateLoss,
    ) -> None:
        """``inner="sgd"``: fixed steps with no host read inside the loop.

        The loop keeps its raw figures on the device (gradient norms, whether the targets are
        finite, surrogate values) and the host reads them once after the loop. So the
        ``inner_tol`` test freezes the parameters (a step scaled by 0) instead of leaving the
        loop, and non-finite gradients or targets raise after the loop (the step then restores
        everything). The loop always runs its ``inner_steps`` backwards and ``inner_steps - 1``
        forwards (``forward_evals`` counts the passes run, also those after ``inner_tol`` froze
        it).
        """
        shape = out.shape
        m = group["inner_steps"]
        tol = float(group["inner_tol"])
        value = surrogate(out)  # checked once per step; the inner forwards below go unchecked
        value_of = surrogate._unchecked()
        device = value.device
        values = [value.detach()]
        norms: list[Tensor] = []
        targets_finite: list[Tensor] = []
        active = torch.ones((), dtype=torch.bool, device=device)
        by_lr: dict[float, list[int]] = {}
        for i, lr in enumerate(lrs):
            by_lr.setdefault(lr, []).append(i)
        for k in range(m):
            grads = torch.autograd.grad(value, params, allow_unused=True)
            pairs = zip(params, grads, strict=True)
            dirs = [torch.zeros_like(p) if g is None else g for p, g in pairs]
            # In the parameters' dtype (no double copy): a norm that overflows reads as
            # non-finite, as a NaN/inf gradient does; either way the step raises.
            norm = torch.linalg.vector_norm(_norms(dirs, device), dtype=torch.float64)
            norms.append(norm)
            active = active & (norm > tol)
            dirs = torch._foreach_mul(dirs, active)  # a zero step once inner_tol froze the loop
            with torch.no_grad():
                for lr, idx in by_lr.items():
                    torch._foreach_add_([params[i] for i in idx], [dirs[i] for i in idx], alpha=-lr)
            if k == m - 1:
                break
            new_out = self._forward(forward, shape, True, out.device)
            value = value_of(new_out)
            targets_finite.append(torch.isfinite(new_out.detach()).all())
            values.append(value.detach())
        f64 = torch.float64
        pieces = [torch.stack(norms), torch.stack(values).to(f64)]
        if targets_finite:
            pieces.append(torch.stack(targets_finite).to(f64))
        pieces.append(_all_finite(params).to(f64).reshape(1))
        host = torch.cat(pieces).tolist()  # the one host read of the inner loop
        grad_norms, trace, finite_targets = host[:m], host[m : 2 * m], host[2 * m : 3 * m - 1]
        taken = increases = 0
        for k in range(m):
            if not math.isfinite(grad_norms[k]):
                raise FloatingPointError(
                    f"non-finite gradient (NaN or inf) of the surrogate w.r.t. the parameters at "
                    f"inner step {k + 1}: the backward pass of forward() is not finite"
                )
            if grad_norms[k] <= tol:
                break  # frozen from here on
            taken += 1
            if k < m - 1:
                if not finite_targets[k]:
                    raise FloatingPointError(
                        "forward() returned non-finite targets after an inner step (the inner "
                        "step lr may be too large)"
                    )
                increases += trace[k + 1] > trace[k]
        state["inner_steps"] += taken
        state["surrogate_increases"] += increases
        state["kappa"] = 1.0
        state["surrogate_trace"] = trace[: min(taken + 1, m)]
        if not host[-1]:
            raise _overflow_error()


# -------------------------------------------------------------------------------------------------
# Private helpers


def _restore(params: list[Tensor], saved: list[Tensor]) -> None:
    with torch.no_grad():
        for p, p0 in zip(params, saved, strict=True):
            p.copy_(p0)


def _norms(tensors: list[Tensor], device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """The 2-norms of ``tensors`` as one vector on ``device`` (one fused kernel per device and
    dtype, no host read); ``dtype`` is the accumulation dtype (default: each tensor's own)."""
    if dtype is None:
        norms = torch._foreach_norm(tensors, 2)
    else:
        norms = torch._foreach_norm(tensors, 2, dtype=dtype)
    return torch.stack([n if n.device == device else n.to(device) for n in norms])


def _all_finite(params: list[Tensor]) -> Tensor:
    """One 0-d bool tensor, no host read: every parameter is finite (checked through the
    parameters' norms, so a norm that overflows the dtype, |θ| ≳ 1e19 in float32, reads as
    non-finite too)."""
    device = params[0].device
    return torch.isfinite(_norms([p.detach() for p in params], device).double().sum())


def _overflow_error() -> FloatingPointError:
    return FloatingPointError(
        "SSO produced non-finite parameters, or parameters whose norm overflows their dtype (the "
        "inner step overflowed); lower lr (inner step) or target_lr"
    )


# SSO's inner loop takes torch.autograd.grad of the model's targets w.r.t. the parameters; on FSDP2
# shards that bypasses the gradient reduce-scatter and gives a result different from one process
# without any error (issue #32), so it is refused before anything runs.
_DTENSOR_MESSAGE = (
    "SSO does not support DTensor parameters (FSDP2 fully_shard or tensor parallelism): "
    "its inner loop differentiates the model's targets with torch.autograd.grad, which "
    "bypasses FSDP2's gradient reduce-scatter, so the step would be wrong. Workaround: "
    "replicate the model (DDP or no wrapper), all-gather the batch and step every rank on "
    "the union batch with the unwrapped module (docs/distributed.md)."
)


def _copy_global(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of the optimizer-wide state deep enough to restore it (its values are numbers,
    ``None`` and the list ``surrogate_trace``)."""
    return {k: list(v) if isinstance(v, list) else copy.deepcopy(v) for k, v in state.items()}


def _validate(group: dict[str, Any]) -> None:
    check_nonnegative("lr", group["lr"])
    check_positive("target_lr", group["target_lr"])
    try:
        check_positive_int("inner_steps", group["inner_steps"])
    except ValueError as err:
        raise ValueError(f"{err} (inner_steps is m, the surrogate steps per oracle call)") from err
    check_choice("schedule", group["schedule"], _SCHEDULES)
    if group["total_steps"] is not None:
        check_positive_int("total_steps", group["total_steps"])
    if group["schedule"] == "exp" and group["total_steps"] is None:
        raise ValueError('total_steps is required with schedule="exp"')
    if group["total_steps"] is not None and group["total_steps"] < 2 and group["schedule"] == "exp":
        raise ValueError("total_steps must be >= 2 with schedule='exp'")
    if not isinstance(group["target_line_search"], bool):
        raise ValueError(f"target_line_search must be a bool, got {group['target_line_search']!r}")
    check_in_range("ls_c", group["ls_c"], 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_in_range("ls_beta", group["ls_beta"], 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_in_range("ls_expand", group["ls_expand"], 1.0, math.inf)
    check_choice("adaptive", group["adaptive"], (None, "adagrad_norm"))
    if group["adaptive"] is not None and group["target_line_search"]:
        raise ValueError("adaptive and target_line_search are exclusive ways to choose target_lr")
    check_choice("inner", group["inner"], _INNER)
    check_in_range(
        "armijo_c", group["armijo_c"], 0.0, 1.0, low_inclusive=False, high_inclusive=False
    )
    check_in_range(
        "armijo_beta", group["armijo_beta"], 0.0, 1.0, low_inclusive=False, high_inclusive=False
    )
    check_in_range("expand", group["expand"], 1.0, math.inf)
    check_nonnegative("inner_tol", group["inner_tol"])
    check_positive_int("max_backtracks", group["max_backtracks"])
    check_choice("loss_reduction", group["loss_reduction"], _REDUCTIONS)
