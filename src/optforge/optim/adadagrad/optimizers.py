r"""AdAdaGrad and AdAdaGrad-Norm: AdaGrad / AdaGrad-Norm with the adaptive batch size of
Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
arXiv:2402.11215 (2024).

Each class is :class:`AdaptiveBatch` around a base optimizer, built from one signature:

.. math::

    \text{AdAdaGrad:}\quad v_k = v_{k-1} + g_k \odot g_k,\qquad
    x_{k+1} = x_k - \alpha\, g_k \oslash (\sqrt{v_k} + \epsilon)

    \text{AdAdaGrad-Norm:}\quad v_k^2 = v_{k-1}^2 + \|g_k\|^2,\qquad
    x_{k+1} = x_k - \alpha\, g_k / (v_k + \epsilon)

(``torch.optim.Adagrad``'s update, unchanged, and :class:`AdaGradNorm`'s with
``granularity="global"``); the next batch size
:math:`b_{k+1} = \min(b_{\max}, \max(b_k, \lceil \hat b \rceil))` comes from the
controller's test. The paper's theory covers AdaGrad-Norm with the norm test
(:class:`AdAdaGradNorm`) and AdaGrad with the coordinate-wise norm test
(``AdAdaGrad(test="coordinate_norm")``); its experiments use the norm test for both, the
default here.

Example::

    opt = AdAdaGrad(model.parameters(), lr=0.3, eta=1.0, initial_batch_size=2,
                    max_batch_size=len(dataset))
    sampler = AdaptiveBatchSampler(len(dataset), opt.batch_size, seed=0)
    for x, y in DataLoader(dataset, batch_sampler=sampler):
        opt.zero_grad()
        opt.backward(model, F.cross_entropy, x, y)
        opt.step()
        sampler.set_batch_size(opt.batch_size)

Any other base optimizer needs no new class: ``AdaptiveBatch(torch.optim.Adam(...),
AdaptiveBatchSize(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

from optforge._core import check_nonnegative
from optforge.optim.adadagrad.adagrad_norm import AdaGradNorm, Granularity
from optforge.optim.adadagrad.adaptive_batch import AdaptiveBatch
from optforge.optim.adadagrad.batch_tests import TestName
from optforge.optim.adadagrad.controller import AdaptiveBatchSize

__all__ = ["AdAdaGrad", "AdAdaGradNorm"]


class AdAdaGrad(AdaptiveBatch):
    """AdaGrad (``torch.optim.Adagrad``'s update, unchanged) with an adaptive batch size.

    Args:
        params: as ``torch.optim.Adagrad`` (likewise ``lr`` [default 1e-2], ``lr_decay``,
            ``weight_decay``, ``initial_accumulator_value``, ``eps``, ``maximize``,
            ``foreach``).
        test: the batch-size test, see :class:`AdaptiveBatchSize` (likewise ``eta``,
            ``theta``, ``nu``, ``initial_batch_size``, ``max_batch_size``, ``test_interval``,
            ``coord_reduce``, ``q``, ``process_group``). The paper's AdaGrad theory uses
            ``test="coordinate_norm"``; its experiments ``"norm"``.
        method: how test steps get the statistics, see :class:`AdaptiveBatch` (``"auto"``:
            ghost norms from one batched backward for Linear / Embedding / LayerNorm / RMSNorm /
            Conv models, else ``torch.func`` per-example gradients).

    ``AdaptiveBatch(torch.optim.Adagrad(params, ...), AdaptiveBatchSize(test, ...))``: ``base``
    is the ``Adagrad``, ``controller`` the controller. Use :meth:`backward` for the gradient,
    then :meth:`step`; :attr:`batch_size` is the size of the next batch.

    Non-finite gradients follow ``torch.optim.Adagrad``: they are not checked (no host sync)
    and enter the accumulator and the parameters. To fail fast, call
    ``torch.nn.utils.clip_grad_norm_(params, float("inf"), error_if_nonfinite=True)`` before
    :meth:`step` (the same holds for :class:`AdAdaGradNorm`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        test: TestName = "norm",
        eta: float = 0.1,
        theta: float = 0.1,
        nu: float = 0.1,
        initial_batch_size: int = 8,
        max_batch_size: int | None = None,
        test_interval: int = 1,
        coord_reduce: Literal["max", "quantile"] = "max",
        q: float = 0.9,
        process_group: Any = None,
        maximize: bool = False,
        foreach: bool | None = None,
        method: str = "auto",
    ) -> None:
        # torch's Adagrad does not name the argument in its errors: check here, first.
        check_nonnegative("lr", lr)
        check_nonnegative("lr_decay", lr_decay)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        check_nonnegative("eps", eps)
        controller = AdaptiveBatchSize(
            test,
            eta=eta,
            theta=theta,
            nu=nu,
            initial_batch_size=initial_batch_size,
            max_batch_size=max_batch_size,
            test_interval=test_interval,
            coord_reduce=coord_reduce,
            q=q,
            process_group=process_group,
        )
        base = torch.optim.Adagrad(
            params,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(base, controller, method)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's Adagrad hyper-parameters (torch's do not), then add it."""
        if "base" in self.__dict__:
            if not isinstance(param_group, dict):
                raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
            for key in _ADAGRAD_KEYS:
                if key in param_group:
                    check_nonnegative(key, param_group[key])
        super().add_param_group(param_group)


_ADAGRAD_KEYS = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")


class AdAdaGradNorm(AdaptiveBatch):
    """AdaGrad-Norm (:class:`AdaGradNorm`) with an adaptive batch size — the method of the
    paper's O(1/K) theorem (with ``test="norm"`` and ``granularity="global"``).

    Args: those of :class:`AdaGradNorm` and the batch-size test's (see :class:`AdAdaGrad`).
    ``base`` is the :class:`AdaGradNorm`, ``controller`` the :class:`AdaptiveBatchSize`.
    Non-finite gradients are not checked (no host sync), as in :class:`AdAdaGrad`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        initial_accumulator_value: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        granularity: Granularity = "global",
        *,
        test: TestName = "norm",
        eta: float = 0.1,
        theta: float = 0.1,
        nu: float = 0.1,
        initial_batch_size: int = 8,
        max_batch_size: int | None = None,
        test_interval: int = 1,
        coord_reduce: Literal["max", "quantile"] = "max",
        q: float = 0.9,
        process_group: Any = None,
        maximize: bool = False,
        method: str = "auto",
    ) -> None:
        controller = AdaptiveBatchSize(
            test,
            eta=eta,
            theta=theta,
            nu=nu,
            initial_batch_size=initial_batch_size,
            max_batch_size=max_batch_size,
            test_interval=test_interval,
            coord_reduce=coord_reduce,
            q=q,
            process_group=process_group,
        )
        base = AdaGradNorm(
            params,
            lr=lr,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            weight_decay=weight_decay,
            granularity=granularity,
            maximize=maximize,
        )
        super().__init__(base, controller, method)
