r"""Early-learning regularization (ELR): cross-entropy plus agreement with temporal targets.

Paper: Sheng Liu, Jonathan Niles-Weed, Narges Razavian, Carlos Fernandez-Granda,
"Early-Learning Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020,
arXiv:2007.00151. Official code: ``shengliu66/ELR`` (``ELR/model/loss.py``).

With noisy labels a network first fits the clean examples and predicts the *true* class of many
mislabelled ones ("early learning"), then memorises the wrong labels. ELR keeps, for every
training example ``i``, a temporal ensemble ``t_i`` of the model's own past predictions and adds a
term that rewards agreement with it. For a mini-batch ``B`` with dataset indices ``idx``
(the exact form of the official code):

.. math::

    p_i &= \operatorname{clamp}(\operatorname{softmax}(z_i), \epsilon, 1-\epsilon),
    \qquad \hat p_i = \operatorname{sg}(p_i) / \textstyle\sum_c \operatorname{sg}(p_i)_c \\
    t_i &\leftarrow \beta\, t_i + (1-\beta)\, \hat p_i \qquad\text{(before the loss, no grad)} \\
    L &= \operatorname{CE}(z, y) + \lambda\,\frac{1}{|B|}\sum_{i\in B}
         \log\bigl(1 - \langle p_i, t_i\rangle\bigr)

``CE`` uses the un-clamped logits; the regulariser uses the clamped ``p`` (where the clamp is
active its gradient is zero, as in the official code). Targets start at zero, so no warm-up is
needed. ``<p, t> < 1`` makes the regulariser ``<= 0``: **the total loss can be negative** — that
is expected. Per logit the gradient is ``p_c - y_c + λ p_c (s - t_c) / (1 - s)`` with
``s = <p, t>``: for a mislabelled example whose target points to the true class it cancels the
pull of cross-entropy toward the wrong label.

:func:`elr_regularizer` and :func:`update_ema_targets_` are the functional core;
:class:`ELRLoss` is the drop-in loss (targets in a registered buffer, so they are checkpointed
and follow ``.to()``); ``suspected_noisy`` flags ``argmax t_i != y_i`` (the authors' answer to
"how do I find the noisy labels").

Example::

    criterion = ELRLoss(num_examples=len(train_set), num_classes=10, lam=3.0, beta=0.7)
    for x, y, index in loader:          # optforge.data.IndexedDataset yields the index
        loss = criterion(model(x), y, index)
        opt.zero_grad(); loss.backward(); opt.step()
    noisy = criterion.suspected_noisy(train_labels)   # argmax of the targets != given label

Choices:

* Targets are updated only in training mode by default (``update_targets=None`` follows
  ``module.training``), so a validation pass after ``criterion.eval()`` leaves them untouched.
* Duplicated indices in one batch trigger a ``UserWarning``; the update is computed from the old
  rows and written with ``index_copy_`` (one of the duplicates wins, as in the official code).
* The buffer is float32 whatever the logits' dtype; the regulariser is computed in
  ``promote_types(logits.dtype, float32)`` (float32 under float16 autocast, float64 for float64).
* With ``reduction="mean"`` and a ``ce_weight``, the CE part is ``F.cross_entropy``'s weighted
  mean and the regulariser a plain mean, as in the official code.
* Under ``torch.distributed`` every rank updates only its own rows: a warning is raised once;
  all-reduce ``targets`` yourself if ranks must agree.
"""

from __future__ import annotations

import warnings
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import (
    Reduction,
    check_choice,
    check_device,
    check_finite,
    check_floating,
    check_in_range,
    check_index_range,
    check_is_tensor,
    check_nonnegative,
    check_nonnegative_values,
    check_not_meta,
    check_positive_int,
)

__all__ = ["ELRLoss", "elr_regularizer", "update_ema_targets_"]


def elr_regularizer(probs: Tensor, targets: Tensor) -> Tensor:
    r"""Per-example ELR term ``log(1 - <p_i, t_i>)``.

    Args:
        probs: predicted probabilities ``(N, C)`` (already clamped by the caller, gradient flows).
        targets: per-example targets ``(N, C)`` (treated as constants).

    Returns:
        A tensor ``(N,)`` of values ``<= 0`` when ``<p, t> in [0, 1)``.
    """
    if probs.shape != targets.shape or probs.dim() != 2:
        raise ValueError(
            f"probs and targets must both be (N, C), got {tuple(probs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    inner = (targets.detach().to(probs.dtype) * probs).sum(dim=1)
    return torch.log1p(-inner)


@torch.no_grad()
def update_ema_targets_(buffer: Tensor, index: Tensor, probs: Tensor, beta: float) -> None:
    r"""In place ``buffer[index] <- beta * buffer[index] + (1 - beta) * probs / probs.sum(1)``.

    The rows are re-normalised (clamped probabilities no longer sum to one) and written with
    ``index_copy_``; gradients never flow into the buffer.

    Args:
        buffer: the ``(n, C)`` target table, modified in place.
        index: dataset indices ``(N,)`` of the rows to update.
        probs: the current predictions ``(N, C)`` (detached here).
        beta: temporal-ensembling momentum in ``[0, 1)``.
    """
    check_in_range("beta", beta, 0.0, 1.0, high_inclusive=False)
    for name, value in (("buffer", buffer), ("index", index), ("probs", probs)):
        check_is_tensor(name, value)
        check_not_meta(name, value)
    if buffer.dim() != 2:
        raise ValueError(f"buffer must be a (n, C) tensor, got shape {tuple(buffer.shape)}")
    check_device("probs", probs, buffer.device, owner="the buffer")
    check_device("index", index, buffer.device, owner="the buffer")
    if index.dim() != 1 or probs.shape != (index.shape[0], buffer.shape[1]):
        raise ValueError(
            f"index must be (N,) and probs (N, {buffer.shape[1]}), got {tuple(index.shape)} and "
            f"{tuple(probs.shape)}"
        )
    check_index_range("index", index, 0, buffer.shape[0], high_name="len(buffer)")
    probs = probs.detach().to(buffer.dtype)
    normalised = probs / probs.sum(dim=1, keepdim=True)
    new_rows = buffer.index_select(0, index).lerp_(normalised, 1.0 - beta)
    buffer.index_copy_(0, index, new_rows)


class ELRLoss(nn.Module):
    r"""Cross-entropy plus the early-learning regulariser with per-example temporal targets.

    Args:
        num_examples: size ``n`` of the training set (rows of the target buffer).
        num_classes: number of classes ``C``.
        lam: regularisation strength λ ``>= 0`` (the official configs use 3 for CIFAR-10
            symmetric noise, 1 for asymmetric, 7 for CIFAR-100). ``lam = 0`` is plain CE.
        beta: temporal-ensembling momentum β in ``[0, 1)`` (0.7 or 0.9; robust).
        clamp_eps: the probabilities are clamped to ``[clamp_eps, 1 - clamp_eps]`` before the
            dot product (1e-4 in the official code), which keeps ``log(1 - <p, t>)`` finite.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-example
            ``CE_i + λ log(1 - <p_i, t_i>)``).
        ce_weight: optional class weights for the cross-entropy part (``F.cross_entropy``).
        label_smoothing: label smoothing of the cross-entropy part (``F.cross_entropy``).

    Attributes:
        targets: the ``(num_examples, num_classes)`` float32 buffer of temporal targets (starts at
            zero; saved in ``state_dict``).
    """

    targets: Tensor

    def __init__(
        self,
        num_examples: int,
        num_classes: int,
        lam: float = 3.0,
        beta: float = 0.7,
        clamp_eps: float = 1e-4,
        reduction: Reduction = "mean",
        ce_weight: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_examples = check_positive_int("num_examples", num_examples)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.lam = float(check_nonnegative("lam", lam))
        self.beta = float(check_in_range("beta", beta, 0.0, 1.0, high_inclusive=False))
        self.clamp_eps = float(
            check_in_range(
                "clamp_eps", clamp_eps, 0.0, 0.5, low_inclusive=False, high_inclusive=False
            )
        )
        self.reduction = check_choice("reduction", reduction, get_args(Reduction))
        self.label_smoothing = float(check_in_range("label_smoothing", label_smoothing, 0.0, 1.0))
        if ce_weight is not None and (ce_weight.dim() != 1 or ce_weight.numel() != num_classes):
            raise ValueError(
                f"ce_weight must have shape ({num_classes},), got {tuple(ce_weight.shape)}"
            )
        self.register_buffer("ce_weight", ce_weight)
        self.register_buffer("targets", torch.zeros(self.num_examples, self.num_classes))
        self._warned_distributed = False

    def extra_repr(self) -> str:
        return (
            f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}, "
            f"beta={self.beta}, clamp_eps={self.clamp_eps}, reduction={self.reduction!r}"
        )

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        index: Tensor,
        update_targets: bool | None = None,
    ) -> Tensor:
        """ELR loss of a batch; updates ``targets[index]`` first (in training mode by default).

        Args:
            logits: un-normalised scores ``(N, C)``.
            target: class ids ``(N,)`` in ``[0, C)`` or soft labels ``(N, C)`` (finite,
                ``>= 0``, floating; on the logits' device).
            index: dataset indices ``(N,)`` in ``[0, num_examples)`` — the position of each example
                in the training set, not in the batch.
            update_targets: update the temporal targets before computing the loss; ``None``
                (default) updates when the module is in training mode.

        Returns:
            A scalar (``"mean"``/``"sum"``) or a per-example tensor (``"none"``).
        """
        index = self._check_inputs(logits, target, index)
        if update_targets is None:
            update_targets = self.training
        work = torch.promote_types(logits.dtype, torch.float32)
        # Everything that can fail runs before the target buffer is updated.
        ce_reduction = "mean" if self.reduction == "mean" else "none"
        ce = F.cross_entropy(
            logits,
            target,
            weight=self.ce_weight,
            reduction=ce_reduction,
            label_smoothing=self.label_smoothing,
        ).to(work)
        probs = F.softmax(logits.to(work), dim=1).clamp(self.clamp_eps, 1.0 - self.clamp_eps)
        if update_targets:
            self._warn_if_distributed()
            update_ema_targets_(self.targets, index, probs, self.beta)
        reg = elr_regularizer(probs, self.targets.index_select(0, index))
        if self.reduction == "mean":
            return ce + self.lam * reg.mean()
        per_example = ce + self.lam * reg
        return per_example.sum() if self.reduction == "sum" else per_example

    @torch.no_grad()
    def predicted_labels(self) -> Tensor:
        """``argmax`` of every example's temporal target, shape ``(num_examples,)``."""
        return self.targets.argmax(dim=1)

    @torch.no_grad()
    def suspected_noisy(self, labels: Tensor) -> Tensor:
        """Boolean mask of examples whose target's argmax differs from the given label.

        Meaningful after training (the authors' recipe for detecting mislabelled examples);
        examples never visited (all-zero target) are not flagged.

        Args:
            labels: the given (possibly noisy) labels of the whole training set, ``(n,)``.
        """
        labels = torch.as_tensor(labels)
        if labels.shape != (self.num_examples,):
            raise ValueError(
                f"labels must have shape ({self.num_examples},), got {tuple(labels.shape)}"
            )
        visited = self.targets.sum(dim=1) > 0
        return (self.predicted_labels() != labels.to(self.targets.device)) & visited

    @torch.no_grad()
    def reset_targets(self) -> None:
        """Zero the temporal targets (e.g. when restarting training on the same data)."""
        self.targets.zero_()

    def _check_inputs(self, logits: Tensor, target: Tensor, index: Tensor) -> Tensor:
        return _validate_batch(
            logits, target, index, self.num_examples, self.num_classes, self.targets.device
        )

    def _warn_if_distributed(self) -> None:
        if (
            not self._warned_distributed
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            self._warned_distributed = True
            warnings.warn(
                "ELRLoss under torch.distributed: each rank updates only the target rows of its "
                "own batches; all-reduce `targets` if the ranks must agree.",
                stacklevel=3,
            )


def _check_logits(logits: Tensor, num_classes: int | None = None) -> int:
    """A finite floating ``(N, C)`` batch (``C = num_classes`` if given); returns ``N``."""
    check_is_tensor("logits", logits)
    check_not_meta("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must be a (N, C) tensor, got shape {tuple(logits.shape)}")
    check_floating("logits", logits)
    n, c = logits.shape
    if num_classes is not None and c != num_classes:
        raise ValueError(f"logits must have num_classes={num_classes} columns, got {c}")
    if n == 0:
        raise ValueError("logits is an empty batch")
    check_finite("logits", logits.detach())
    return n


def _check_target(target: Tensor, logits: Tensor, *, soft: bool) -> None:
    """Class ids ``(N,)`` in ``[0, C)`` or (``soft``) finite non-negative soft labels ``(N, C)``."""
    n, c = logits.shape
    check_is_tensor("target", target)
    check_not_meta("target", target)
    check_device("target", target, logits.device, owner="the logits")
    if target.dim() == 1:
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"class-id target must be an integer tensor, got {target.dtype}")
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} entries for a batch of {n}")
        check_index_range("target", target, 0, c, high_name="num_classes")
    elif not soft:
        raise ValueError(f"target must be class ids of shape ({n},), got {tuple(target.shape)}")
    elif target.shape != logits.shape:
        raise ValueError(
            f"target must be class ids (N,) or soft labels (N, C) = {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    else:
        if not target.dtype.is_floating_point:
            raise TypeError(f"soft-label target must be floating-point, got {target.dtype}")
        check_finite("target", target)
        check_nonnegative_values("target", target)


def _validate_batch(
    logits: Tensor,
    target: Tensor | None,
    index: Tensor,
    num_examples: int,
    num_classes: int,
    device: torch.device,
    stacklevel: int = 6,
) -> Tensor:
    """Check shapes, ranges and finiteness; return ``index`` as int64 on ``device``."""
    n = _check_logits(logits, num_classes)
    if logits.device != device:
        raise ValueError(
            f"logits are on {logits.device} but the target buffer is on {device}; "
            "move the loss with .to(device)"
        )
    if target is not None:
        _check_target(target, logits, soft=True)
    if index is None:
        raise ValueError("index is required: pass the dataset indices of the batch")
    index = torch.as_tensor(index)
    check_not_meta("index", index)
    if index.dtype.is_floating_point or index.dtype == torch.bool or index.dtype.is_complex:
        raise TypeError(f"index must be an integer tensor, got {index.dtype}")
    if index.dim() != 1 or index.shape[0] != n:
        raise ValueError(
            f"index must have shape ({n},) (one per example), got {tuple(index.shape)}"
        )
    index = index.to(device=device, dtype=torch.long)
    check_index_range("index", index, 0, num_examples, high_name="num_examples")
    if torch.unique(index).numel() != n:
        warnings.warn(
            "index contains duplicates within one batch; only one update per row is kept",
            stacklevel=stacklevel,
        )
    return index
