r"""Noise-robust cross-entropy baselines of the ELR comparison: GCE and SCE.

Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018) and symmetric cross-entropy (Wang et
al., ICCV 2019), baselines of Liu et al., NeurIPS 2020 (arXiv:2007.00151) that no maintained
package ships.

Example::

    loss = GCELoss(q=0.7)(model(x), y)
    loss = SCELoss(alpha=0.1, beta=1.0)(model(x), y)
"""

from __future__ import annotations

import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import Reduction, check_choice, check_in_range, check_nonnegative
from optforge.losses.elr.loss import _check_logits, _check_target

__all__ = ["GCELoss", "SCELoss"]


class GCELoss(nn.Module):
    r"""Generalized cross-entropy ``L_q = (1 - p_y^q) / q`` (Zhang & Sabuncu, NeurIPS 2018).

    ``q -> 0`` recovers CE, ``q = 1`` is MAE; ``p_y`` is clamped to ``>= 1e-7``.

    Args:
        q: exponent in ``(0, 1]`` (0.7 in both papers).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, q: float = 0.7, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.q = float(check_in_range("q", q, 0.0, 1.0, low_inclusive=False))
        self.reduction = check_choice("reduction", reduction, get_args(Reduction))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_logits(logits)
        _check_target(target, logits, soft=False)
        p_y = F.softmax(logits, dim=1).gather(1, target.long()[:, None]).squeeze(1)
        loss = (1.0 - p_y.clamp_min(1e-7) ** self.q) / self.q
        return _reduce(loss, self.reduction)


class SCELoss(nn.Module):
    r"""Symmetric cross-entropy ``α CE + β RCE`` (Wang et al., ICCV 2019).

    ``RCE = -Σ_c p_c log ŷ_c`` with ``log 0`` replaced by ``A`` (``log_clamp``), i.e.
    ``RCE = -A (1 - p_y)``; ``p`` is clamped to ``[1e-7, 1]`` as in the official code.

    Args:
        alpha: weight of CE (0.1 for CIFAR-10).
        beta: weight of RCE (1.0 for CIFAR-10).
        log_clamp: ``A < 0``, the value of ``log 0`` (``-4`` in the paper; ``log(1e-4)`` in code).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_clamp: float = -4.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.alpha = float(check_nonnegative("alpha", alpha))
        self.beta = float(check_nonnegative("beta", beta))
        if not isinstance(log_clamp, int | float) or not math.isfinite(log_clamp) or log_clamp >= 0:
            raise ValueError(f"log_clamp must be a finite number < 0, got {log_clamp!r}")
        self.log_clamp = float(log_clamp)
        self.reduction = check_choice("reduction", reduction, get_args(Reduction))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_logits(logits)
        _check_target(target, logits, soft=False)
        ce = F.cross_entropy(logits, target, reduction="none")
        probs = F.softmax(logits, dim=1).clamp(1e-7, 1.0)
        log_label = torch.full_like(probs, self.log_clamp).scatter(1, target.long()[:, None], 0.0)
        rce = -(probs * log_label).sum(dim=1)
        return _reduce(self.alpha * ce + self.beta * rce, self.reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
