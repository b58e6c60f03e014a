r"""Equal-weight iterate averaging after a burn-in (SWA): :class:`IterateAverager`.

The estimator of Langevin-with-averaging is the running mean of the iterates from
``start_step`` on, :math:`\bar\theta = \frac{1}{T-T_0}\sum_{t\ge T_0}\theta_t`, updated in place
with ``torch.optim.swa_utils.get_swa_multi_avg_fn()`` (the function ``AveragedModel`` uses); for
an ``nn.Module`` the averager delegates to ``torch.optim.swa_utils.AveragedModel`` itself. It
works with any optimizer.

Example::

    avg = IterateAverager([theta], start_step=1000)
    for t in range(2000):
        opt.step(); avg.update()
    theta_bar, = avg.average(normalize=True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn

from optforge._core import check_nonnegative_int

__all__ = ["IterateAverager"]


class IterateAverager:
    """Equal-weight running mean of iterates after a burn-in (SWA averaging).

    With a list of tensors, the average is kept in ``dtype`` (float64 by default: long runs) and
    updated with ``torch.optim.swa_utils.get_swa_multi_avg_fn()``. With an ``nn.Module``, the
    averager wraps ``torch.optim.swa_utils.AveragedModel`` (equal weights, parameters only) and
    :attr:`module` is the averaged copy.

    Args:
        params_or_module: the tensors being optimised (read at every :meth:`update`) or a module.
        start_step: number of :meth:`update` calls skipped before averaging starts (burn-in).
        dtype: accumulation dtype for tensors (``None``: each tensor's own dtype).

    Example::

        avg = IterateAverager([theta], start_step=1000)
        for t in range(2000):
            opt.step(); avg.update()
        theta_bar, = avg.average(normalize=True)
    """

    def __init__(
        self,
        params_or_module: Iterable[Tensor] | nn.Module,
        *,
        start_step: int = 0,
        dtype: torch.dtype | None = torch.float64,
    ) -> None:
        self.start_step = check_nonnegative_int("start_step", start_step)
        self.dtype = dtype
        self._avg_fn = get_swa_multi_avg_fn()
        self.module: AveragedModel | None = None
        if isinstance(params_or_module, nn.Module):
            self._source: nn.Module | list[Tensor] = params_or_module
            self.module = AveragedModel(params_or_module, multi_avg_fn=self._avg_fn)
            self._average: list[Tensor] = []
        else:
            self._source = list(params_or_module)
            if not self._source:
                raise ValueError("params_or_module is empty")
            for p in self._source:
                if not isinstance(p, Tensor):
                    raise TypeError(f"params_or_module must hold tensors, got {type(p).__name__}")
            self._average = [
                torch.zeros_like(p, dtype=dtype or p.dtype, memory_format=torch.preserve_format)
                for p in self._source
            ]
        self.steps_seen = 0
        self.n_averaged = 0

    @torch.no_grad()
    def update(self) -> None:
        """Count one iterate; from the ``start_step``-th call on, add it to the mean."""
        self.steps_seen += 1
        if self.steps_seen <= self.start_step:
            return
        if self.module is not None:
            self.module.update_parameters(self._source)
        else:
            current = [
                p.detach().to(a.dtype) for p, a in zip(self._source, self._average, strict=True)
            ]
            if self.n_averaged == 0:
                torch._foreach_copy_(self._average, current)
            else:
                self._avg_fn(self._average, current, self.n_averaged)
        self.n_averaged += 1

    def average(self, *, normalize: bool = False) -> list[Tensor]:
        """The averaged tensors (copies; ``normalize=True`` divides the whole list by its norm).

        Raises:
            RuntimeError: nothing has been averaged yet.
        """
        if self.n_averaged == 0:
            raise RuntimeError("no iterate averaged yet: call update() past start_step")
        if self.module is not None:
            out = [p.detach().clone() for p in self.module.module.parameters()]
        else:
            out = [a.clone() for a in self._average]
        if normalize:
            norm = torch.sqrt(sum((a.double() ** 2).sum() for a in out))
            if not bool(norm > 0):
                raise RuntimeError("the averaged iterate has zero norm; cannot normalize")
            out = [(a / norm.to(a.dtype)) for a in out]
        return out

    def reset(self) -> None:
        """Forget the average and the burn-in count (for cyclic restarts)."""
        self.steps_seen = 0
        self.n_averaged = 0
        if self.module is not None:
            self.module.n_averaged.zero_()
        else:
            for a in self._average:
                a.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Counters and averaged tensors (or the ``AveragedModel``'s state dict)."""
        state: dict[str, Any] = {
            "start_step": self.start_step,
            "steps_seen": self.steps_seen,
            "n_averaged": self.n_averaged,
        }
        if self.module is not None:
            state["module"] = self.module.state_dict()
        else:
            state["average"] = [a.clone() for a in self._average]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.start_step = int(state["start_step"])
        self.steps_seen = int(state["steps_seen"])
        self.n_averaged = int(state["n_averaged"])
        if self.module is not None:
            self.module.load_state_dict(state["module"])
        else:
            if len(state["average"]) != len(self._average):
                raise ValueError(
                    f"state has {len(state['average'])} averaged tensors, expected "
                    f"{len(self._average)}"
                )
            with torch.no_grad():
                for a, s in zip(self._average, state["average"], strict=True):
                    a.copy_(s)
