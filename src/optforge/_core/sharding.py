"""Refusing sharded (DTensor) parameters in the optimizers that need whole parameters.

FSDP2 (``fully_shard``) and tensor parallelism hand an optimizer ``DTensor`` parameters. An
optimizer whose step needs whole parameters (a joint solve, per-example gradients, its own
``torch.autograd.grad`` that bypasses FSDP2's reduce-scatter) must refuse them before it touches
anything, never give a silently different result (issue #32). One exception type for all of
them: :class:`DTensorNotSupportedError` is both a ``TypeError`` and a ``NotImplementedError``,
so either ``except`` catches it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from torch import Tensor

__all__ = ["DTensorNotSupportedError", "refuse_dtensor", "refuse_dtensor_group"]


class DTensorNotSupportedError(TypeError, NotImplementedError):
    """An optimizer that needs whole parameters was given DTensor (FSDP2) parameters."""


def refuse_dtensor(params: Iterable[Tensor], message: str) -> None:
    """Raise :class:`DTensorNotSupportedError` with ``message`` if any of ``params`` is a DTensor.

    Free when ``torch.distributed.tensor`` was never imported (no DTensor can exist then).
    """
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is None:
        return
    if any(isinstance(p, dtensor.DTensor) for p in params):
        raise DTensorNotSupportedError(message)


def refuse_dtensor_group(param_group: dict[str, Any], message: str) -> dict[str, Any]:
    """``param_group`` with its params as a list, after :func:`refuse_dtensor` on them
    (``params`` missing or a set: returned as is, for ``torch.optim`` to report)."""
    params = param_group.get("params")
    if params is None or isinstance(params, set):
        return param_group
    if isinstance(params, Tensor):
        refuse_dtensor([params], message)
        return param_group
    params = list(params)
    refuse_dtensor(params, message)
    return {**param_group, "params": params}
