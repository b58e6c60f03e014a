r"""AdaGrad-Norm: AdaGrad with one adaptive scalar step size (Ward, Wu, Bottou 2019).

.. math::

    v_k^2 = v_{k-1}^2 + \|g_k\|^2,\qquad x_{k+1} = x_k - \alpha\, g_k / (v_k + \epsilon)

``granularity="global"`` is the scalar method of the theory (one :math:`v` per param group,
:math:`\|g_k\|` over all its tensors); ``"layer"`` keeps one scalar per tensor and ``"row"`` one
per output row / channel (per element for tensors of dim < 2), the row-wise variant of the
official AdAdaGrad code. ``initial_accumulator_value`` is :math:`v_{-1}^2` (torch's ``Adagrad``
convention; default 1e-2 as the official code).

Example::

    opt = AdaGradNorm(model.parameters(), lr=1.0)
    loss_fn(model(x), y).backward()
    opt.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import DTensorNotSupportedError, check_choice, check_nonnegative
from optforge.optim.gradient_noise import is_sharded, local, sum_over_shards

__all__ = ["AdaGradNorm", "Granularity"]

Granularity = Literal["global", "layer", "row"]


class AdaGradNorm(torch.optim.Optimizer):
    """AdaGrad-Norm: one adaptive scalar step size ``α / (v_k + ε)``, ``v_k² = v_{k-1}² + ‖g_k‖²``.

    Args:
        params: parameters or param-group dicts.
        lr: ``α`` (default 1.0, as the official code); a 0-dim tensor lets a scheduler change
            it without recompiling a ``torch.compile``-d step.
        initial_accumulator_value: ``v_{-1}² >= 0`` (default 1e-2, as the official code).
        eps: added to ``v_k`` (default 1e-10).
        weight_decay: L2 penalty added to the gradient (as ``torch.optim.Adagrad``).
        granularity: ``"global"`` — one scalar per param group (the paper's AdaGrad-Norm);
            ``"layer"`` — one scalar per tensor; ``"row"`` — one per output row / channel for
            tensors of dim >= 2 and per element otherwise (the official code's row-wise variant).
        maximize: maximize the objective.

    State: ``"sum"`` (``v²``; float32 for half-precision params) and ``"step"``; for
    ``"global"`` both sit in the state of the group's first parameter.

    Under FSDP2 (DTensor parameters) the squared gradient norms are summed over the local shards
    and all-reduced, so ``"sum"`` is the same plain scalar on every rank (the one-process value);
    ``granularity="row"`` raises ``NotImplementedError`` there.

    Non-finite gradients are not checked (no host sync), as in ``torch.optim.Adagrad``: a NaN
    or inf gradient enters ``"sum"`` and the parameters. To fail fast, check before the step,
    e.g. ``torch.nn.utils.clip_grad_norm_(params, float("inf"), error_if_nonfinite=True)``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        initial_accumulator_value: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        granularity: Granularity = "global",
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "weight_decay": weight_decay,
            "granularity": granularity,
            "maximize": maximize,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's hyper-parameters first, then add it."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One AdaGrad-Norm update; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = []
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("AdaGradNorm does not support sparse gradients")
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                grads.append(g)
            if group["granularity"] == "global":
                self._step_global(group, params, grads)
            else:
                self._step_local(group, params, grads)
        return loss

    def _init_state(self, p: Tensor, group: Mapping[str, Any], shape: tuple[int, ...]) -> dict:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.full(
                shape,
                group["initial_accumulator_value"],
                dtype=_acc_dtype(p.dtype),
                device=p.device,
            )
            state["step"] = torch.zeros((), dtype=torch.float32)
        return state

    def _step_global(self, group: Mapping[str, Any], params: list[Tensor], grads: list[Tensor]):
        anchor = group["params"][0]
        state = self._init_state(anchor, group, ())
        acc = state["sum"]
        sq = _squared_norms(params, grads, acc).sum()
        acc.add_(sq)
        state["step"] += 1
        denom = acc.sqrt().add_(group["eps"])
        for p, g in zip(params, grads, strict=True):
            _apply(local(p), (local(g).to(acc.dtype) / denom.to(p.device)).to(p.dtype), group["lr"])

    def _step_local(self, group: Mapping[str, Any], params: list[Tensor], grads: list[Tensor]):
        row = group["granularity"] == "row"
        if row and any(is_sharded(p) for p in params):
            raise DTensorNotSupportedError(
                "AdaGradNorm(granularity='row') with DTensor (FSDP2) parameters: the row "
                "accumulators would be local shards; use granularity='global' or 'layer'"
            )
        if not row and any(is_sharded(p) for p in params):  # one scalar per tensor, all-reduced
            for p, g, sq in zip(params, grads, _squared_norms(params, grads, None), strict=True):
                state = self._init_state(p, group, ())
                acc = state["sum"]
                acc.add_(sq.to(acc.dtype))
                state["step"] += 1
                denom = acc.sqrt().add_(group["eps"])
                _apply(local(p), (local(g).to(acc.dtype) / denom).to(p.dtype), group["lr"])
            return
        for p, g in zip(params, grads, strict=True):
            if row and p.dim() >= 2:
                shape: tuple[int, ...] = (p.shape[0],) + (1,) * (p.dim() - 1)
            elif row:
                shape = tuple(p.shape)
            else:
                shape = ()
            state = self._init_state(p, group, shape)
            acc = state["sum"]
            g_acc = g.to(acc.dtype)
            if row and p.dim() >= 2:
                acc.add_(g_acc.pow(2).sum(dim=tuple(range(1, p.dim())), keepdim=True))
            elif row:
                acc.add_(g_acc.pow(2))
            else:
                acc.add_(g_acc.pow(2).sum())
            state["step"] += 1
            denom = acc.sqrt().add_(group["eps"])
            _apply(p, (g_acc / denom).to(p.dtype), group["lr"])


def _validate(group: Mapping[str, Any]) -> None:
    lr = group["lr"]
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(f"lr must be a number or a 1-element float tensor, got {lr!r}")
        lr = float(lr)
    check_nonnegative("lr", lr)
    check_nonnegative("initial_accumulator_value", group["initial_accumulator_value"])
    check_nonnegative("eps", group["eps"])
    check_nonnegative("weight_decay", group["weight_decay"])
    check_choice("granularity", group["granularity"], ("global", "layer", "row"))
    if group["initial_accumulator_value"] == 0 and group["eps"] == 0:
        raise ValueError("initial_accumulator_value and eps cannot both be 0 (division by 0)")


def _squared_norms(params: list[Tensor], grads: list[Tensor], acc: Tensor | None) -> Tensor:
    """``(‖g_i‖²)_i``; DTensor (FSDP2) shards are summed locally and all-reduced over the mesh
    (one collective when all parameters share mesh and placements)."""
    dtype = acc.dtype if acc is not None else _acc_dtype(grads[0].dtype)
    device = acc.device if acc is not None else local(grads[0]).device
    sq = torch.stack([local(g).to(dtype).pow(2).sum().to(device) for g in grads])
    sharded = [i for i, p in enumerate(params) if is_sharded(p)]
    if not sharded:
        return sq
    first = params[sharded[0]]
    if len(sharded) == len(params) and all(
        p.device_mesh == first.device_mesh and p.placements == first.placements for p in params
    ):
        return sum_over_shards(sq, first)
    parts = [sum_over_shards(sq[i].clone().reshape(1), p) for i, p in enumerate(params)]
    return torch.cat(parts)


def _apply(p: Tensor, update: Tensor, lr: float | Tensor) -> None:
    """``p -= lr * update`` (a tensor ``lr`` is read on the device, no host sync)."""
    if isinstance(lr, Tensor):
        p.sub_(update.mul_(lr.to(p.device)))
    else:
        p.add_(update, alpha=-lr)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
