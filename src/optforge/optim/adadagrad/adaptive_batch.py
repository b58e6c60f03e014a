r"""Adaptive batch sizes for any ``torch.optim`` optimizer: a wrapper around a base optimizer and
an :class:`AdaptiveBatchSize` controller.

Each step has two parts. :meth:`AdaptiveBatch.backward` computes the batch gradient; when the
controller's test is due it does so through the per-example gradients :math:`G_i`
(``torch.func``), keeps their statistics and writes their mean :math:`g_k` into ``.grad``.
:meth:`AdaptiveBatch.step` then runs the base optimizer's update, unchanged, and hands the
statistics to the controller, which sets the next batch size
:math:`b_{k+1} = \min(b_{\max}, \max(b_k, \lceil \hat b \rceil))`.

The wrapper hides nothing: ``param_groups`` and ``state`` are the base optimizer's own objects
(live, also after ``load_state_dict``), so LR schedulers, ``GradScaler`` and
``torch.distributed.checkpoint`` see one set of groups and one state. ``state_dict()`` is the
base optimizer's ``state_dict`` with one more entry, ``"adaptive_batch"``, holding the
controller's state (batch size, step counter, hyper-parameters).

Under DDP, :meth:`~AdaptiveBatch.backward` all-reduces the statistics across the controller's
``process_group`` (when ``torch.distributed`` is initialised) and writes the **global** mean
gradient to ``.grad``; pass the unwrapped module (``ddp.module``) on test steps.

Example (any base optimizer; ``AdaptiveBatchSampler`` lives in ``optforge.data``)::

    opt = AdaptiveBatch(torch.optim.Adam(model.parameters(), lr=1e-3),
                        AdaptiveBatchSize("norm", eta=1.0, initial_batch_size=2,
                                          max_batch_size=len(dataset)))
    sampler = AdaptiveBatchSampler(len(dataset), opt.batch_size, seed=0)
    for x, y in DataLoader(dataset, batch_sampler=sampler):
        opt.zero_grad()
        loss = opt.backward(model, F.cross_entropy, x, y)  # per-example grads when a test is due
        opt.step()                                         # Adam's step, then the batch size
        sampler.set_batch_size(opt.batch_size)             # takes effect at the next batch
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from optforge._core import check_choice
from optforge._core.sharding import refuse_dtensor
from optforge.optim.adadagrad.controller import AdaptiveBatchSize
from optforge.optim.adadagrad.grad_stats import GradStats
from optforge.optim.adadagrad.per_example import (
    METHODS,
    LossFn,
    _batch_grad_stats,
    _check_batch,
    _distributed,
)

__all__ = ["AdaptiveBatch"]


class AdaptiveBatch(torch.optim.Optimizer):
    """Wrap ``base`` so that its batch size adapts: ``backward`` measures, ``step`` decides.

    Args:
        base: any ``torch.optim`` optimizer; its ``param_groups`` and ``state`` are shared, not
            copied, and its update is used unchanged.
        controller: the batch-size controller (default: ``AdaptiveBatchSize()``, the norm test
            with its default hyper-parameters).
        method: how test steps get their statistics: ``"auto"`` (default: ghost norms from one
            batched backward when the model allows it, else ``torch.func`` per-example
            gradients), ``"ghost"`` or ``"per_example"`` (see :meth:`backward`).

    Use :meth:`backward` for the gradient, then :meth:`step`; :attr:`batch_size` is the size of
    the next batch. ``state_dict()`` is ``{**base.state_dict(), "adaptive_batch": ...}``;
    ``load_state_dict`` restores both (a state dict without ``"adaptive_batch"`` leaves the
    controller as it is).
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        controller: AdaptiveBatchSize | None = None,
        method: str = "auto",
    ) -> None:
        check_choice("method", method, METHODS)
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        if controller is None:
            controller = AdaptiveBatchSize()
        elif not isinstance(controller, AdaptiveBatchSize):
            raise TypeError(
                f"controller must be an AdaptiveBatchSize, got {type(controller).__name__}"
            )
        # Optimizer.__init__ sets up the hooks and the step patching. It runs before ``base`` is
        # attached, on a placeholder group that add_param_group drops; from then on
        # ``param_groups`` and ``state`` read (and write) the base optimizer's.
        super().__init__([torch.zeros(1)], base.defaults)
        self.base = base
        self.controller = controller
        self.method = method
        self.last_stats_method: str | None = None  # "ghost" / "per_example" of the last test
        self._pending: GradStats | None = None

    # -- the base optimizer's containers, live ----------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimizer's param groups (the same list object)."""
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        if "base" in self.__dict__:  # before: Optimizer.__init__'s placeholder, dropped
            self.base.param_groups = groups

    @property
    def state(self) -> defaultdict[Tensor, Any]:
        """The base optimizer's per-parameter state (the same mapping)."""
        return self.base.state

    @state.setter
    def state(self, state: defaultdict[Tensor, Any]) -> None:
        if "base" in self.__dict__:
            self.base.state = state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base" in self.__dict__:  # Optimizer.__init__'s placeholder group is dropped
            self.base.add_param_group(param_group)

    # -- the batch size ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """The batch size to draw next (tell your sampler: ``set_batch_size``)."""
        return self.controller.batch_size

    @property
    def last_test(self) -> dict[str, Any]:
        """What the last step's test measured (``b_hat``, ``trace_variance``, ...)."""
        return self.controller.last_test

    def backward(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: Tensor,
        targets: Tensor,
        *,
        chunk_size: int | None = None,
        method: str | None = None,
    ) -> Tensor:
        """Back-propagate the batch's mean loss; when a test is due, with its statistics.

        When the test is due, the statistics of the per-example gradients are kept for
        :meth:`step` and their mean (the minibatch gradient; global under DDP) is **added** to
        ``.grad`` of the model's trainable parameters — no second backward. With ``method``
        (default: the wrapper's :attr:`method`) ``"auto"`` they come from one ordinary batched
        backward ("ghost norms", :mod:`optforge.optim.adadagrad.ghost`) when every trainable
        parameter lives in an ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm``, RMSNorm or
        ``nn.Conv1d``/``nn.Conv2d`` module and the test is not the coordinate-wise one;
        otherwise (or with ``method="per_example"``) from per-example gradients computed with
        ``torch.func`` in chunks of ``chunk_size`` examples. :attr:`last_stats_method` says
        which ran. Test steps refuse DTensor (FSDP2) parameters with a ``TypeError``. When no
        test is due it is a plain ``loss_fn(model(inputs), targets).backward()``. Calling it on
        several micro-batches before ``step`` merges their statistics (gradient accumulation;
        scale ``.grad`` as you would for ordinary accumulation); the inner-product tests need
        the whole global batch in one call (use ``chunk_size`` to bound memory). Returns the
        mean loss (detached).
        """
        ctrl = self.controller
        if _check_batch(inputs, targets) < 2:
            sync = _distributed(ctrl.process_group)
            test = sync and ctrl.should_test()
        else:
            test = ctrl.should_test()
            sync = test and _distributed(ctrl.process_group)
        if not test:
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            return loss.detach()
        refuse_dtensor((p for g in self.param_groups for p in g["params"]), _DTENSOR_MESSAGE)
        if self._pending is not None and ctrl.needs_inner_product:
            raise ValueError(
                "inputs: the inner-product tests need the whole global batch in one backward() "
                "call (use chunk_size to bound memory)"
            )
        stats, loss, local = _batch_grad_stats(
            model,
            loss_fn,
            inputs,
            targets,
            inner_product=ctrl.needs_inner_product,
            chunk_size=chunk_size,
            process_group=ctrl.process_group,
            distributed=sync,
            method=_method(ctrl, self.method if method is None else method),
            checked=True,
        )
        self.last_stats_method = "per_example" if stats.coordinatewise else "ghost"
        with torch.no_grad():
            if local is not None:  # ghost, one process: the batch gradient, per parameter
                params, means = local  # Σ_i G_i, ours (fresh from autograd): divided in place
                count = float(stats.count)
                for p, g in zip(params, means, strict=True):  # autograd's: p's shape and dtype
                    g.div_(count)
                    if p.grad is None:
                        p.grad = g
                    else:
                        p.grad.add_(g)
            else:
                params = [p for p in model.parameters() if p.requires_grad]
                means = list(torch.split(stats.mean, [p.numel() for p in params]))
                for p, g in zip(params, means, strict=True):
                    if g.shape != p.shape or g.dtype != p.dtype:
                        g = g.view_as(p).to(p.dtype)
                    if p.grad is None:
                        p.grad = g.clone()
                    else:
                        p.grad.add_(g)
        self._pending = stats if self._pending is None else self._pending.merge(stats)
        return loss

    # -- the optimizer protocol -------------------------------------------------------------
    def step(self, closure: Callable[[], Tensor] | None = None, **kwargs: Any) -> Tensor | None:
        """The base optimizer's step (``closure`` and keywords passed on), then the batch-size
        update from the statistics :meth:`backward` kept (none: the step is counted, untested).
        """
        loss = self.base.step(closure, **kwargs)
        stats, self._pending = self._pending, None
        self.controller.update(stats)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict`` plus ``"adaptive_batch"`` (the controller's)."""
        state = self.base.state_dict()
        state["adaptive_batch"] = self.controller.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (also those written by optforge's earlier mixin classes,
        which had the same layout)."""
        state = dict(state_dict)
        controller = state.pop("adaptive_batch", None)
        self.base.load_state_dict(state)
        if controller is not None:
            self.controller.load_state_dict(controller)


def _method(ctrl: AdaptiveBatchSize, method: str) -> str:
    check_choice("method", method, METHODS)
    if ctrl.test == "coordinate_norm":  # needs Σ_i G_ij² per coordinate
        if method == "ghost":
            raise ValueError("method='ghost' cannot give the coordinate-wise test's statistics")
        return "per_example"
    return method


# test steps need whole per-example gradients: refuse sharded (DTensor) parameters
_DTENSOR_MESSAGE = (
    "AdaptiveBatch.backward: the batch-size test does not support FSDP2 / DTensor "
    "(sharded) parameters: the per-example statistics need whole parameters. "
    "Workaround: train with DDP (replicated parameters), or use the base optimizer "
    "(torch.optim.Adagrad / AdaGradNorm) with a fixed batch size under FSDP2."
)
