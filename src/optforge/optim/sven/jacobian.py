r"""Sven's conditions: per-example residuals ``R`` and their Jacobian ``M = ∂R/∂θ``.

Each of the ``B`` per-example losses is a *condition* with residual
:math:`R_\alpha = \ell_\alpha^{\kappa/2}`; :math:`M_{\alpha i} = \partial R_\alpha/\partial\theta_i`
(``B × P``, stored in the optimizer's ``solver_dtype``). Two ways to build it:

1. From a model: ``loss_fn(model(inputs), targets)`` per example, by
   ``torch.func.vmap(torch.func.grad_and_value(...))`` over ``torch.func.functional_call``
   (chunked with ``chunk_size`` to bound memory). ``loss_fn`` must return per-example losses
   (``reduction="none"``); trailing dimensions are summed.
2. From a closure returning the per-example losses (``(B,)`` or ``(B, ...)``), by
   ``torch.autograd.grad`` with ``is_grads_batched=True`` (one vectorised backward per row).

With ``microbatch_size = m`` the losses are averaged over consecutive groups of ``m`` before the
residuals are formed, so ``M`` has ``B / m`` rows. In ``residual_mode`` the closure or ``loss_fn``
returns raw residuals (``(B,)`` or ``(B, m)``, flattened into conditions) and ``kappa`` is ignored.

For ``kappa ≠ 2`` the Jacobian is formed by the chain rule
:math:`M = \tfrac{\kappa}{2}\,\ell^{\kappa/2-1}\nabla\ell`; for a fractional ``kappa / 2`` the
loss is clamped at the dtype's smallest normal number, so an exactly-fitted example (``ℓ = 0``,
``∇ℓ = 0``) gives a zero row instead of ``0 · ∞ = NaN``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, jacrev, vmap

from optforge.optim.sven.direction import _shape

__all__: list[str] = []


def _jacobian_closure(
    closure: Callable[[], Tensor],
    params: list[Tensor],
    selected: list[Tensor],
    group: dict[str, Any],
    solver_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Conditions and their Jacobian from a closure (one batched backward per row)."""
    with torch.enable_grad():
        out = closure()
        if not isinstance(out, Tensor):
            raise TypeError(f"closure must return a tensor, got {type(out).__name__}")
        conditions = _conditions(out, group, "closure")
        n = conditions.shape[0]
        active = [p for p, idx in zip(params, selected, strict=True) if idx.numel()]
        if conditions.requires_grad and active:
            eye = torch.eye(n, dtype=conditions.dtype, device=conditions.device)
            grads = torch.autograd.grad(
                conditions, active, grad_outputs=eye, is_grads_batched=True, allow_unused=True
            )
        else:
            grads = [None] * len(active)
    by_param = dict(zip(map(id, active), grads, strict=True))
    cols = []
    for p, idx in zip(params, selected, strict=True):
        if idx.numel() == 0:
            continue
        g = by_param[id(p)]
        g = torch.zeros(n, p.numel(), dtype=p.dtype, device=p.device) if g is None else g
        cols.append(g.reshape(n, -1)[:, idx.to(p.device)].to(solver_dtype))
    return conditions.detach(), torch.cat(cols, dim=1)


def _conditions(out: Tensor, group: dict[str, Any], who: str) -> Tensor:
    """Validate the closure's output and average it over micro-batches, flattened."""
    if not out.is_floating_point():
        raise TypeError(f"the {who} must return floating-point losses, got dtype {out.dtype}")
    if out.numel() == 0:
        raise ValueError(
            f"the {who} returned an empty tensor of shape {tuple(out.shape)}; Sven needs one "
            "loss (or residual) per example"
        )
    if out.dim() == 0:
        raise ValueError(
            f"Sven needs per-example losses of shape (B,) from the {who}, got a scalar; "
            "use reduction='none'"
        )
    m = group["microbatch_size"]
    batch = out.shape[0]
    if batch % m:
        raise ValueError(
            f"microbatch_size={m} must divide the batch size, got B={batch} from the {who}"
        )
    if group["residual_mode"]:
        return out.reshape(batch // m, m, -1).mean(1).reshape(-1)
    return out.reshape(batch, -1).sum(1).reshape(batch // m, m).mean(1)


def _jacobian_model(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    inputs: Tensor,
    targets: Tensor | None,
    params: list[Tensor],
    selected: list[Tensor],
    group: dict[str, Any],
    solver_dtype: torch.dtype,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    """Conditions and their Jacobian from a model, by ``vmap`` over ``functional_call``."""
    if not isinstance(inputs, Tensor) or inputs.dim() == 0:
        raise ValueError(f"inputs must be a tensor with a batch dimension, got {_shape(inputs)}")
    batch, m = inputs.shape[0], group["microbatch_size"]
    bad_targets = not isinstance(targets, Tensor) or targets.shape[:1] != (batch,)
    if targets is not None and bad_targets:
        raise ValueError(
            f"targets must have the batch size {batch} as first dimension, got {_shape(targets)}"
        )
    if batch == 0:
        raise ValueError("inputs: empty batch")
    if batch % m:
        raise ValueError(f"microbatch_size={m} must divide the batch size, got B={batch}")
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(f"model: optimizer parameters {missing} are not parameters of model")
    var_names = [names[id(p)] for p, idx in zip(params, selected, strict=True) if idx.numel()]
    variables = {names[id(p)]: p.detach() for p in params if names[id(p)] in var_names}
    residual_mode = group["residual_mode"]

    def group_value(var: dict[str, Tensor], x: Tensor, y: Tensor | None) -> Tensor:
        pred = functional_call(model, var, (x,), strict=False)
        out = loss_fn(pred) if y is None else loss_fn(pred, y)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != m:
            raise ValueError(
                f"loss_fn must return per-example losses of shape (B,) or (B, ...) "
                f"(use reduction='none'), got shape {_shape(out)} for a group of {m}"
            )
        if residual_mode:
            return out.reshape(m, -1).mean(0)
        return out.reshape(m, -1).sum(1).mean()

    xs = inputs.reshape(batch // m, m, *inputs.shape[1:])
    ys = None if targets is None else targets.reshape(batch // m, m, *targets.shape[1:])
    in_dims = (None, 0, None if ys is None else 0)
    if residual_mode:

        def both(var: dict[str, Tensor], x: Tensor, y: Tensor | None):
            value = group_value(var, x, y)
            return jacrev(group_value)(var, x, y), value

        jac, values = vmap(both, in_dims=in_dims, chunk_size=chunk_size)(variables, xs, ys)
    else:
        jac, values = vmap(grad_and_value(group_value), in_dims=in_dims, chunk_size=chunk_size)(
            variables, xs, ys
        )
    n = values.numel()
    cols = []
    for p, idx in zip(params, selected, strict=True):
        if idx.numel():
            g = jac[names[id(p)]].reshape(n, -1)
            cols.append(g[:, idx.to(g.device)].to(solver_dtype))
    values = values.reshape(-1)
    return values, torch.cat(cols, dim=1) if cols else values.new_zeros(n, 0)


def _residuals(
    values: Tensor, jac: Tensor, group: dict[str, Any], step_no: int, solver_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Residuals R, Jacobian M = ∂R/∂θ (chain rule for κ ≠ 2) and the loss to report."""
    values = values.to(solver_dtype)
    what = "residuals" if group["residual_mode"] else "losses"
    if not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise FloatingPointError(f"Sven step {step_no}: {bad} non-finite {what} (NaN or inf)")
    if not torch.isfinite(jac).all():
        raise FloatingPointError(
            f"Sven step {step_no}: the Jacobian of the {what} has non-finite entries"
        )
    if group["residual_mode"]:
        return values, jac, 0.5 * (values**2).sum()
    kappa = group["kappa"]
    half = kappa / 2.0
    reported = values.mean()
    if half == 1.0:
        return values, jac, reported
    if (values < 0).any() and half != round(half):
        raise ValueError(
            f"negative losses with kappa={kappa}: loss ** (kappa / 2) is undefined; use "
            "kappa=2 (or an even integer kappa) or residual_mode=True"
        )
    if half == round(half):  # integer power: defined for any sign, smooth at 0
        residuals = values**half
        factor = half * values ** (half - 1.0)
    else:  # clamp at the smallest normal number: an exactly fitted example gives a zero row
        clamped = values.clamp_min(torch.finfo(values.dtype).tiny)
        residuals = clamped**half
        factor = half * clamped ** (half - 1.0)
    return residuals, jac * factor[:, None], reported
