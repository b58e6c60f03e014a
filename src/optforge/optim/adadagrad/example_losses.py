r"""Per-example losses :math:`\ell_i` = ``loss_fn(out[i:i+1], y[i:i+1])`` of a batched output.

The ghost statistics (:mod:`optforge.optim.adadagrad.ghost`) need the loss of every example as
``loss_fn`` defines it on a batch of one. For an arbitrary callable that takes
``torch.func.vmap`` over ``loss_fn`` (exact whatever the callable does, but ``vmap``'s wrapper
costs about as much as the loss itself on a small batch). For the stock torch losses below, when
the shapes make the equality exact, one call with ``reduction="none"`` gives the same numbers
(up to the order of a float reduction):

* element-wise losses — ``nn.MSELoss``, ``nn.L1Loss``, ``nn.SmoothL1Loss`` (``beta``),
  ``nn.HuberLoss`` (``delta``), ``nn.BCELoss``, ``nn.BCEWithLogitsLoss`` and their
  ``F.*`` functions called with their defaults: ``out`` and ``targets`` of the same shape;
  ``"mean"`` averages over the non-batch dimensions, ``"sum"`` sums. A ``weight`` /
  ``pos_weight`` must broadcast to one example's shape without growing it (no batch dimension),
  otherwise ``vmap``;
* ``nn.CrossEntropyLoss`` / ``F.cross_entropy`` and ``nn.NLLLoss`` / ``F.nll_loss``, class
  dimension 1 (``out`` ``[B, C, ...]``): with class-index targets ``[B, ...]`` the ``"mean"``
  of one example divides by the sum of its non-ignored targets' class weights (the count when
  there is no ``weight``) — exactly what ``reduction="mean"`` does on a batch of one, so
  ``weight``, ``ignore_index`` and ``label_smoothing`` are all exact (an example whose targets are
  all ignored gets NaN, as on its own). With class-probability targets (same shape as ``out``,
  cross entropy only) the mean is over the non-class dimensions.

Anything else (a subclass, a module with hooks, ``reduction="none"``, a lambda, other shapes)
takes the ``vmap`` path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["per_example_losses", "stock_loss"]

_ELEMENTWISE_MODULES: dict[type, tuple[Callable[..., Tensor], tuple[str, ...]]] = {
    nn.MSELoss: (F.mse_loss, ()),
    nn.L1Loss: (F.l1_loss, ()),
    nn.SmoothL1Loss: (F.smooth_l1_loss, ("beta",)),
    nn.HuberLoss: (F.huber_loss, ("delta",)),
    nn.BCELoss: (F.binary_cross_entropy, ("weight",)),
    nn.BCEWithLogitsLoss: (F.binary_cross_entropy_with_logits, ("weight", "pos_weight")),
}
_CLASS_MODULES: dict[type, tuple[Callable[..., Tensor], tuple[str, ...]]] = {
    nn.CrossEntropyLoss: (F.cross_entropy, ("weight", "ignore_index", "label_smoothing")),
    nn.NLLLoss: (F.nll_loss, ("weight", "ignore_index")),
}
_ELEMENTWISE_FUNCTIONS = {fn for fn, _ in _ELEMENTWISE_MODULES.values()}
_CLASS_FUNCTIONS = {fn for fn, _ in _CLASS_MODULES.values()}


def stock_loss(loss_fn: Any) -> tuple[str, Callable[..., Tensor], dict[str, Any], str] | None:
    """``(family, function, keyword arguments, reduction)`` of a recognised stock loss
    (family ``"elementwise"`` or ``"class"``), or ``None`` (use ``vmap``)."""
    if loss_fn in _ELEMENTWISE_FUNCTIONS:  # plain functions: their defaults
        return "elementwise", loss_fn, {}, "mean"
    if loss_fn in _CLASS_FUNCTIONS:
        return "class", loss_fn, {}, "mean"
    spec = _ELEMENTWISE_MODULES.get(type(loss_fn))
    family = "elementwise"
    if spec is None:
        spec, family = _CLASS_MODULES.get(type(loss_fn)), "class"
    if spec is None:
        return None
    if loss_fn._forward_hooks or loss_fn._forward_pre_hooks:  # the call would run them
        return None
    reduction = loss_fn.reduction
    if reduction not in ("mean", "sum"):
        return None
    fn, names = spec
    return family, fn, {name: getattr(loss_fn, name) for name in names}, reduction


def per_example_losses(out: Tensor, targets: Tensor, loss_fn: Any) -> Tensor | None:
    """``[B]`` losses ``loss_fn(out[i:i+1], targets[i:i+1])`` from one ``reduction="none"`` call,
    or ``None`` when ``loss_fn`` is not a recognised stock loss or the shapes do not make the
    equality exact (module docstring)."""
    spec = stock_loss(loss_fn)
    if spec is None or not isinstance(out, Tensor) or not isinstance(targets, Tensor):
        return None
    family, fn, kwargs, reduction = spec
    b = out.shape[0]
    if family == "elementwise" or (
        fn is F.cross_entropy and targets.shape == out.shape and targets.is_floating_point()
    ):
        if targets.shape != out.shape:
            return None
        example = out.shape[1:]
        if family == "elementwise":
            for name in ("weight", "pos_weight"):
                w = kwargs.get(name)
                if w is not None and (
                    w.dim() >= out.dim() or torch.broadcast_shapes(w.shape, example) != example
                ):
                    return None
        elif out.dim() < 2:
            return None
        none = fn(out, targets, reduction="none", **kwargs)
        # per-example values over the remaining dims (cross entropy: the class dim is gone)
        return _reduce(none, reduction)
    # class-index targets: out [B, C, ...], targets [B, ...]
    if out.dim() < 2 or targets.shape != out.shape[:1] + out.shape[2:]:
        return None
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        return None
    none = fn(out, targets, reduction="none", **kwargs).reshape(b, -1)
    if reduction == "sum":
        return none.sum(dim=1) if none.shape[1] != 1 else none.reshape(b)
    # mean of one example = Σ_t w_{y_t} ℓ_t / Σ_t w_{y_t} over its non-ignored targets
    keep = targets.reshape(b, -1) != kwargs.get("ignore_index", -100)
    weight = kwargs.get("weight")
    if weight is None:
        den = keep if keep.shape[1] == 1 else keep.sum(dim=1, keepdim=True)
    else:
        safe = torch.where(keep, targets.reshape(b, -1), 0)
        den = (weight[safe] * keep).sum(dim=1, keepdim=True)
    if none.shape[1] != 1:
        none = none.sum(dim=1, keepdim=True)
    return (none / den).reshape(b)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    """``[B, ...]`` → ``[B]``: the mean (or sum) over each example; no kernel for one value."""
    b = values.shape[0]
    if values.numel() == b:
        return values.reshape(b)
    values = values.reshape(b, -1)
    return values.sum(dim=1) if reduction == "sum" else values.mean(dim=1)
