r"""A model EMA (mean teacher) with ELR+'s decay schedules, and the sigmoid ramp.

Part of ELR+ (Liu et al., "Early-Learning Regularization Prevents Memorization of Noisy Labels",
NeurIPS 2020, arXiv:2007.00151; official code ``shengliu66/ELR``, ``ELR_plus/``): each of the two
networks keeps an exponential moving average of its weights, whose predictions give the *other*
network's targets. :func:`sigmoid_rampup` is Laine & Aila's temporal-ensembling ramp used for
the EMA decay and for λ.

Example::

    ema = ModelEMA(model, decay=0.997, ramp_steps=40000)
    for x, y in loader:
        ...; opt.step()
        ema.update(model)
    teacher_logits = ema(x)

Choice: the first update copies the weights (``AveragedModel`` convention); later updates use
``decay_at(t)`` with ``t`` the number of previous updates (the official code uses ``t + 1`` in
the ramp: a negligible shift).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from optforge._core import (
    check_finite_number,
    check_in_range,
    check_nonnegative,
    check_nonnegative_int,
)

__all__ = ["ModelEMA", "sigmoid_rampup"]


class ModelEMA(AveragedModel):
    r"""Exponential moving average of a model's weights (mean teacher) with ELR+'s schedules.

    After each optimiser step call :meth:`update` (``update_parameters``):
    ``θ̄ <- d_t θ̄ + (1 - d_t) θ`` where ``t`` counts the previous updates and

    * ``mode="sigmoid_ramp"`` (ELR+ CIFAR configs): ``d_t = decay · sigmoid_rampup(t, ramp_steps)``;
    * ``mode="min_1_minus_1_over_t"`` (Clothing1M / WebVision): ``d_t = min(1 - 1/(t+1), decay)``.

    Built on ``torch.optim.swa_utils.AveragedModel``: the first update copies the weights,
    buffers (BatchNorm statistics) are copied from the live model, and ``n_averaged`` is in the
    ``state_dict`` so resumed runs continue the schedule exactly.

    Args:
        model: the network to average (deep-copied).
        decay: the EMA decay α in ``[0, 1)`` (0.997 for CIFAR, 0.9999 for Clothing1M).
        ramp_steps: ramp length ``L`` in updates for ``"sigmoid_ramp"`` (0 → constant decay).
        mode: ``"sigmoid_ramp"`` or ``"min_1_minus_1_over_t"``.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.997,
        ramp_steps: int = 40000,
        mode: Literal["sigmoid_ramp", "min_1_minus_1_over_t"] = "sigmoid_ramp",
    ) -> None:
        check_in_range("decay", decay, 0.0, 1.0, high_inclusive=False)
        ramp_steps = check_nonnegative_int("ramp_steps", ramp_steps)
        if mode not in ("sigmoid_ramp", "min_1_minus_1_over_t"):
            raise ValueError(f"mode must be 'sigmoid_ramp' or 'min_1_minus_1_over_t', got {mode!r}")
        super().__init__(model, multi_avg_fn=self._ema_update)
        self.decay = float(decay)
        self.ramp_steps = ramp_steps
        self.mode = mode

    def decay_at(self, step: int) -> float:
        """The decay ``d_t`` used by the update that follows ``step`` earlier updates."""
        if self.mode == "sigmoid_ramp":
            return self.decay * sigmoid_rampup(step, self.ramp_steps)
        return min(1.0 - 1.0 / (step + 1), self.decay)

    def update(self, model: nn.Module) -> None:
        """Fold the live ``model``'s weights into the average (alias of ``update_parameters``)."""
        self.update_parameters(model)

    def _ema_update(
        self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor
    ) -> None:
        decay = self.decay_at(int(num_averaged))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            avg, cur = (list(t) for t in zip(*floats, strict=True))
            torch._foreach_lerp_(avg, cur, 1.0 - decay)


def sigmoid_rampup(step: float, length: float) -> float:
    r"""The ramp ``exp(-5 (1 - min(step, length) / length)^2)``, or 1 if ``length == 0``.

    Used by ELR+ for the EMA decay and the λ ramp (Laine & Aila's temporal-ensembling ramp).

    Args:
        step: the current iteration (clipped to ``[0, length]``).
        length: ramp length in iterations; ``0`` disables the ramp.
    """
    check_nonnegative("length", length)
    check_finite_number("step", step)
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(float(step), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * phase * phase))
