"""Token-level unlearning losses: the inverted hinge loss (LoKU) and gradient ascent.

Paper: *Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs*, Sungmin Cha,
Sungjun Cho, Dasol Hwang, Moontae Lee, ICLR 2025, arXiv:2408.06621.

**Inverted hinge loss (IHL).** For a forget-set target token ``y`` at position ``t`` with
next-token distribution ``p = softmax(z)``,

.. math::

    \\ell_{IHL} = 1 + p_y - \\max_{v \\ne y} p_v \\in [0, 2],

averaged over the non-masked target tokens. Its gradient w.r.t. the logits is
``p_y (e_y - p) - p_{v*} (e_{v*} - p)`` with ``v* = argmax_{v≠y} p_v``: bounded, concentrated on
the target and the runner-up token, and vanishing as ``p_y → 0`` — unlike gradient ascent
(``-CE``), whose loss is unbounded and whose logit gradient ``p - e_y`` never shrinks.

Example::

    logits = model(input_ids).logits                  # (B, T, V)
    loss = inverted_hinge_loss(logits, labels)        # labels: (B, T), -100 = ignored

Choice: an all-masked batch (no target token) raises ``ValueError`` for ``reduction="mean"``
(the mean is undefined and in an unlearning loop it signals a data bug); ``"sum"`` returns 0.
"""

from __future__ import annotations

from numbers import Integral
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import (
    NonFiniteError,
    Reduction,
    check_choice,
    check_device,
    check_floating,
    check_index_range,
    check_is_tensor,
    check_nonnegative,
    check_not_meta,
)

__all__ = [
    "GradientAscentLoss",
    "InvertedHingeLoss",
    "gradient_ascent_loss",
    "inverted_hinge_loss",
]

_REDUCTIONS = get_args(Reduction)


def inverted_hinge_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    margin: float = 1.0,
    shift: bool = True,
) -> Tensor:
    """Inverted hinge loss ``margin + p_y − max_{v≠y} p_v`` per target token.

    Args:
        logits: Next-token logits, shape ``(..., T, V)``.
        labels: Target token ids, shape ``(..., T)``; ``ignore_index`` marks untrained positions.
        ignore_index: Label value that is skipped.
        reduction: ``"mean"`` over non-masked tokens, ``"sum"``, or ``"none"`` (per position,
            0 at masked positions; shape of the (shifted) labels).
        margin: The hinge margin (1 in the paper).
        shift: If True (Hugging Face convention), position ``t`` of ``logits`` predicts
            ``labels[t + 1]``; if False, they are already aligned.

    Returns:
        The reduced loss (a scalar) or the per-position losses.

    Raises:
        ValueError: On mismatched shapes, an empty batch, a vocabulary of fewer than 2 tokens
            (``max_{v≠y}`` needs another token), non-finite logits at a trained position
            (:class:`~optforge._core.NonFiniteError`, also a ``FloatingPointError``, as a
            diverged training loss reports), labels out of range, an
            unknown reduction, a negative or NaN margin, or an all-masked batch with
            ``reduction="mean"``.
        TypeError: Non-tensor inputs, non-integer labels or non-floating logits.
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    check_nonnegative("margin", margin)
    logits, labels = _shifted(logits, labels, shift, ignore_index)
    mask = labels != ignore_index
    dtype = torch.promote_types(logits.dtype, torch.float32)
    per_token = logits.new_zeros(labels.shape, dtype=dtype)
    if bool(mask.any()):
        z = logits[mask].to(per_token.dtype)
        y = labels[mask].long()  # in [0, vocab): checked by _shifted
        p = z.softmax(-1)
        p_true = p.gather(-1, y[:, None]).squeeze(-1)
        p_other = p.scatter(-1, y[:, None], float("-inf")).amax(-1)
        per_token = per_token.masked_scatter(mask, margin + p_true - p_other)
    return _reduce(per_token, mask, reduction, "inverted hinge loss")


def gradient_ascent_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    shift: bool = True,
) -> Tensor:
    """Gradient-ascent unlearning loss: the *negative* token cross-entropy (to be minimised).

    With ``reduction="mean"`` this equals ``-outputs.loss`` of a Hugging Face causal LM.

    Args:
        logits: Next-token logits, shape ``(..., T, V)``.
        labels: Target ids, shape ``(..., T)``.
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        shift: Shift logits/labels by one position (Hugging Face convention).

    Returns:
        The reduced loss or the per-position losses (0 at masked positions).
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    logits, labels = _shifted(logits, labels, shift, ignore_index)
    mask = labels != ignore_index
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1).long(),
        ignore_index=ignore_index,
        reduction="none",
    ).reshape(labels.shape)
    return _reduce(-ce, mask, reduction, "gradient-ascent loss")


class InvertedHingeLoss(nn.Module):
    """``nn.Module`` form of :func:`inverted_hinge_loss`.

    Args:
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        margin: Hinge margin (1 in the paper).
    """

    def __init__(
        self, ignore_index: int = -100, reduction: Reduction = "mean", margin: float = 1.0
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, _REDUCTIONS)
        if not isinstance(ignore_index, Integral) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.margin = float(check_nonnegative("margin", margin))

    def forward(self, logits: Tensor, labels: Tensor, *, shift: bool = True) -> Tensor:
        return inverted_hinge_loss(
            logits,
            labels,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            margin=self.margin,
            shift=shift,
        )


class GradientAscentLoss(nn.Module):
    """``nn.Module`` form of :func:`gradient_ascent_loss` (negative cross-entropy).

    Args:
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, ignore_index: int = -100, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_choice("reduction", reduction, _REDUCTIONS)
        if not isinstance(ignore_index, Integral) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor, *, shift: bool = True) -> Tensor:
        return gradient_ascent_loss(
            logits, labels, ignore_index=self.ignore_index, reduction=self.reduction, shift=shift
        )


def _shifted(
    logits: Tensor, labels: Tensor, shift: bool, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """Validate the inputs (before any computation) and align them (``shift``)."""
    check_is_tensor("logits", logits)
    check_is_tensor("labels", labels)
    check_not_meta("logits", logits)
    check_not_meta("labels", labels)
    check_device("labels", labels, logits.device, owner="the logits")
    if logits.dim() < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must have shape labels.shape + (vocab,); got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    check_floating("logits", logits)
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not isinstance(ignore_index, Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be a bool, got {shift!r}")
    if labels.numel() == 0:
        raise ValueError(
            f"logits and labels are an empty batch (labels of shape {tuple(labels.shape)})"
        )
    vocab = logits.shape[-1]
    if vocab < 2:
        raise ValueError(
            f"logits: the vocabulary (last dimension) must have at least 2 tokens, got {vocab}"
        )
    if shift:
        if labels.shape[-1] < 2:
            raise ValueError("labels: shift=True needs a sequence dimension of length >= 2")
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    mask = labels != ignore_index
    if bool(mask.any()):
        nonfinite = ~torch.isfinite(logits.detach()).all(dim=-1) & mask
        if bool(nonfinite.any()):  # both a ValueError and the trainers' FloatingPointError
            raise NonFiniteError(
                f"logits contains non-finite values (nan or inf) at {int(nonfinite.sum())} "
                "trained position(s)"
            )
        check_index_range("labels", labels[mask], 0, vocab, high_name="vocab")
    return logits, labels


def _reduce(per_token: Tensor, mask: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    count = mask.sum()
    if int(count) == 0:
        raise ValueError(
            f"labels: every position equals ignore_index, so the mean {name} is undefined"
        )
    return total / count
