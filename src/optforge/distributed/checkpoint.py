r"""Optimizer checkpoints through ``torch.distributed.checkpoint`` (DCP) that keep everything.

torch's DCP helpers (``get_optimizer_state_dict``/``set_optimizer_state_dict``) keep only the
``state`` and ``param_groups`` of an optimizer's state dict, and they build the state of a fresh
optimizer by calling ``step(closure=None)`` with zero gradients. optforge optimizers keep more
(Langevin's and Sven's generator states, AdAdaGrad's batch-size controller, the Newton method's
Hessian state, the gradient-noise schedule) and three of them take no step without a closure
(Sven, SSO, GradNormSmoothNewton). :class:`OptimizerState` is a DCP ``Stateful`` that carries all
of it, for any ``torch.optim`` optimizer::

    state = {"model": get_model_state_dict(model), "optim": OptimizerState(model, opt)}
    dcp.save(state, checkpoint_id=path)
    # resume (any world size, e.g. 2 ranks -> 1): build model and optimizer, then
    state = {"model": get_model_state_dict(model), "optim": OptimizerState(model, opt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])

What travels where:

* **Per-parameter state** of optimizers that step without a closure goes through torch's helpers
  (keyed by parameter name, so a DDP, FSDP2 or plain model of the same architecture can load it;
  FSDP2 ``DTensor`` state is re-sharded by DCP). A fresh optimizer's state is built for the load
  template as torch does (one step with zero gradients and ``lr = 0``), but here the gradients,
  the learning rates, the parameters and the extra state are put back afterwards.
* **The extra state**, everything an optimizer's ``state_dict()`` returns besides ``state`` and
  ``param_groups``, travels as one serialised object (the same on every rank, so written once).
  Wrappers with a ``base`` optimizer (``NoisyOptimizer``, ``AdAdaGrad``) hand the base to the
  helpers and keep their own entries as extras; a nested ``{"base", "noise"}`` state dict works
  too.
* **Closure-only optimizers** (``Sven``, ``SSO``, ``GradNormSmoothNewton``) refuse DTensor
  parameters, so their state is replicated: the whole ``state_dict()`` travels as one object and
  no state-initialising step is needed.

Nothing is dropped silently: the keys of the saved per-parameter state are recorded, and loading
into an optimizer whose template lacks one raises ``KeyError`` naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from typing import Any

import torch
from torch import nn

__all__ = ["OptimizerState"]

_TORCH_KEYS = ("state", "param_groups")


def _closure_only(optimizer: torch.optim.Optimizer) -> bool:
    from optforge.optim import SSO, GradNormSmoothNewton, Sven

    return isinstance(optimizer, (Sven, SSO, GradNormSmoothNewton))


def _helpers_target(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer torch's helpers see: a wrapper's ``base`` (its state and groups)."""
    base = getattr(optimizer, "base", None)
    return base if isinstance(base, torch.optim.Optimizer) else optimizer


def _extras(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every entry of ``optimizer.state_dict()`` besides torch's own two (and a nested base)."""
    sd = optimizer.state_dict()
    skip = (*_TORCH_KEYS, "base") if _helpers_target(optimizer) is not optimizer else _TORCH_KEYS
    return {k: v for k, v in sd.items() if k not in skip}


def _restore_extras(optimizer: torch.optim.Optimizer, extras: dict[str, Any]) -> None:
    if extras or _helpers_target(optimizer) is not optimizer:
        # A wrapper also re-shares the base's containers, which torch's load replaced.
        optimizer.load_state_dict({**optimizer.state_dict(), **extras})


def _pack(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")


def _flat_keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in _flat_keys(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def _initialise(optimizer: torch.optim.Optimizer, owner: torch.optim.Optimizer) -> None:
    """Build the per-parameter state of a fresh optimizer as torch's helpers do (one step with
    zero gradients and ``lr = 0``), then put back the gradients, the learning rates, the
    parameters and ``owner``'s extra state (generators, counters) as they were."""
    if optimizer.state:
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(p.grad is not None for p in params):
        return  # torch's helpers skip this optimizer too: the saved state is what it has
    lrs = [group.get("lr") for group in optimizer.param_groups]
    saved = [p.detach().clone() for p in params]
    extras = copy.deepcopy(_extras(owner))
    try:
        for p in params:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        for group in optimizer.param_groups:
            if "lr" in group:
                lr = group["lr"]
                group["lr"] = torch.zeros_like(lr) if isinstance(lr, torch.Tensor) else 0.0
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            if lr is not None:
                group["lr"] = lr
        with torch.no_grad():
            for p, p0 in zip(params, saved, strict=True):
                p.grad = None
                p.copy_(p0)
        if extras:
            owner.load_state_dict({**owner.state_dict(), **extras})


class OptimizerState:
    """A DCP ``Stateful`` holding everything of ``optimizer`` (see the module docstring).

    Args:
        model: the module whose parameters ``optimizer`` steps (DDP, FSDP2 or plain); it names
            the per-parameter state.
        optimizer: any ``torch.optim`` optimizer, optforge's included.
        options: ``torch.distributed.checkpoint.state_dict.StateDictOptions`` passed on to
            torch's helpers (default: theirs, sharded; ``strict`` is replaced by the check that
            every saved state entry has a place in the loading optimizer).
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, options: Any = None
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.options = options

    def state_dict(self) -> dict[str, Any]:
        """What DCP saves (and, for a load, the template it loads into)."""
        opt = self.optimizer
        if _closure_only(opt):
            return {"whole": _pack(opt.state_dict())}
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        target = _helpers_target(opt)
        _initialise(target, opt)
        optim = get_optimizer_state_dict(self.model, target, options=self.options)
        keys = _flat_keys(optim.get("state", {}))
        return {"optim": optim, "extras": _pack({"extras": _extras(opt), "state_keys": keys})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (called by ``dcp.load``)."""
        opt = self.optimizer
        if _closure_only(opt):
            if "whole" not in state_dict:
                raise KeyError(
                    f"this checkpoint was not saved from a {type(opt).__name__} through "
                    "OptimizerState (no 'whole' entry)"
                )
            opt.load_state_dict(_unpack(state_dict["whole"]))
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        if "extras" not in state_dict:
            raise KeyError(
                f"this checkpoint was not saved from a {type(opt).__name__} through "
                "OptimizerState (no 'extras' entry)"
            )
        packed = _unpack(state_dict["extras"])
        missing = sorted(set(packed["state_keys"]) - set(_flat_keys(state_dict["optim"]["state"])))
        if missing:
            raise KeyError(
                f"the checkpoint has optimizer state this {type(opt).__name__} does not: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''} (a different optimizer or "
                "configuration?); nothing was loaded"
            )
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # torch's strict check wants state for every parameter; optimizers with one global
        # state (AdaGradNorm's global accumulator, SSO) keep it on the first one. The check
        # above (saved keys vs. the template's) is the strict one here.
        options = dataclasses.replace(self.options or StateDictOptions(), strict=False)
        target = _helpers_target(opt)
        set_optimizer_state_dict(self.model, target, state_dict["optim"], options=options)
        _restore_extras(opt, packed["extras"])
