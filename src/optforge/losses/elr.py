r"""Early-learning regularization (ELR) for noisy labels, the ELR+ pieces, and two baselines.

Paper: Sheng Liu, Jonathan Niles-Weed, Narges Razavian, Carlos Fernandez-Granda,
"Early-Learning Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020,
arXiv:2007.00151. Official code: ``shengliu66/ELR`` (``ELR/model/loss.py``, ``ELR_plus/``).

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

Contents:

* :func:`elr_regularizer`, :func:`update_ema_targets_` — the functional core;
* :class:`ELRLoss` — the drop-in loss (targets in a registered buffer, so they are checkpointed
  and follow ``.to()``); ``suspected_noisy`` flags ``argmax t_i != y_i`` (the authors' answer to
  "how do I find the noisy labels");
* ELR+ pieces, each usable on its own: :func:`sigmoid_rampup`, :class:`ModelEMA` (a
  ``torch.optim.swa_utils.AveragedModel`` with the paper's EMA schedules), :func:`mixup_batch`
  and :class:`ELRPlusLoss` (cross targets from the other network's EMA, mixed targets, soft CE);
* :class:`GCELoss` (Zhang & Sabuncu 2018) and :class:`SCELoss` (Wang et al. 2019), baselines of
  the paper's comparison that no maintained package ships.

Example::

    criterion = ELRLoss(num_examples=len(train_set), num_classes=10, lam=3.0, beta=0.7)
    for x, y, index in loader:          # optforge.data.IndexedDataset yields the index
        loss = criterion(model(x), y, index)
        opt.zero_grad(); loss.backward(); opt.step()
    noisy = criterion.suspected_noisy(train_labels)   # argmax of the targets != given label

Choices where the spec was silent or marked VERIFY:

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
* :class:`ModelEMA`'s first update copies the weights (``AveragedModel`` convention); later updates
  use ``decay_at(t)`` with ``t`` the number of previous updates (the official code uses
  ``t + 1`` in the ramp: a negligible shift).
* :func:`mixup_batch` takes a required ``torch.Generator`` (no global RNG in library code).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from optforge._core import check_finite, check_in_range, check_nonnegative, check_positive_int

__all__ = [
    "ELRLoss",
    "ELRPlusLoss",
    "GCELoss",
    "ModelEMA",
    "SCELoss",
    "elr_regularizer",
    "mixup_batch",
    "sigmoid_rampup",
    "update_ema_targets_",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Functional core
# --------------------------------------------------------------------------------------------


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
    probs = probs.detach().to(buffer.dtype)
    normalised = probs / probs.sum(dim=1, keepdim=True)
    new_rows = buffer.index_select(0, index).lerp_(normalised, 1.0 - beta)
    buffer.index_copy_(0, index, new_rows)


def sigmoid_rampup(step: float, length: float) -> float:
    r"""The ramp ``exp(-5 (1 - min(step, length) / length)^2)``, or 1 if ``length == 0``.

    Used by ELR+ for the EMA decay and the λ ramp (Laine & Aila's temporal-ensembling ramp).

    Args:
        step: the current iteration (clipped to ``[0, length]``).
        length: ramp length in iterations; ``0`` disables the ramp.
    """
    check_nonnegative("length", length)
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(float(step), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * phase * phase))


# --------------------------------------------------------------------------------------------
# ELR loss
# --------------------------------------------------------------------------------------------


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
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
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
            target: class ids ``(N,)`` in ``[0, C)`` or soft labels ``(N, C)``.
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
        probs = F.softmax(logits.to(work), dim=1).clamp(self.clamp_eps, 1.0 - self.clamp_eps)
        if update_targets:
            self._warn_if_distributed()
            update_ema_targets_(self.targets, index, probs, self.beta)
        reg = elr_regularizer(probs, self.targets.index_select(0, index))
        ce_reduction = "mean" if self.reduction == "mean" else "none"
        ce = F.cross_entropy(
            logits,
            target,
            weight=self.ce_weight,
            reduction=ce_reduction,
            label_smoothing=self.label_smoothing,
        ).to(work)
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
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(
            f"logits must be a (N, C) tensor, got shape {getattr(logits, 'shape', None)}"
        )
    n, c = logits.shape
    if c != num_classes:
        raise ValueError(f"logits must have num_classes={num_classes} columns, got {c}")
    if n == 0:
        raise ValueError("logits is an empty batch")
    if logits.device != device:
        raise ValueError(
            f"logits are on {logits.device} but the target buffer is on {device}; "
            "move the loss with .to(device)"
        )
    check_finite("logits", logits.detach())
    if target is not None:
        if target.dim() == 1:
            if target.dtype.is_floating_point or target.dtype == torch.bool:
                raise TypeError(f"class-id target must be an integer tensor, got {target.dtype}")
            if target.shape[0] != n:
                raise ValueError(f"target has {target.shape[0]} entries for a batch of {n}")
            low, high = torch.aminmax(target)
            if int(low) < 0 or int(high) >= num_classes:
                raise ValueError(f"target labels must lie in [0, {num_classes})")
        elif target.shape != logits.shape:
            raise ValueError(
                f"target must be class ids (N,) or soft labels (N, C) = {tuple(logits.shape)}, "
                f"got {tuple(target.shape)}"
            )
    if index is None:
        raise ValueError("index is required: pass the dataset indices of the batch")
    index = torch.as_tensor(index)
    if index.dtype.is_floating_point or index.dtype == torch.bool or index.dtype.is_complex:
        raise TypeError(f"index must be an integer tensor, got {index.dtype}")
    if index.dim() != 1 or index.shape[0] != n:
        raise ValueError(
            f"index must have shape ({n},) (one per example), got {tuple(index.shape)}"
        )
    index = index.to(device=device, dtype=torch.long)
    low, high = torch.aminmax(index)
    if int(low) < 0 or int(high) >= num_examples:
        raise IndexError(f"index values must lie in [0, num_examples={num_examples})")
    if torch.unique(index).numel() != n:
        warnings.warn(
            "index contains duplicates within one batch; only one update per row is kept",
            stacklevel=stacklevel,
        )
    return index


# --------------------------------------------------------------------------------------------
# ELR+ pieces
# --------------------------------------------------------------------------------------------


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
        if isinstance(ramp_steps, bool) or not isinstance(ramp_steps, int) or ramp_steps < 0:
            raise ValueError(f"ramp_steps must be an integer >= 0, got {ramp_steps!r}")
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


def mixup_batch(
    x: Tensor, y_onehot: Tensor, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, float, Tensor]:
    r"""Mixup as in ELR+: ``m ~ Beta(α, α)``, ``m <- max(m, 1 - m)``, a random permutation ``π``.

    Returns ``x̃ = m x + (1 - m) x[π]``, ``ỹ = m y + (1 - m) y[π]``, ``m`` and ``π``; with
    ``m >= 0.5`` the mixed example stays closest to the original, so the original index's target
    remains the right one to mix (:meth:`ELRPlusLoss.update_targets` mixes targets with the same
    ``m`` and ``π``).

    Args:
        x: inputs ``(N, ...)``.
        y_onehot: one-hot or soft labels ``(N, C)``.
        alpha: Beta parameter ``>= 0``; ``0`` returns the inputs unchanged (``m = 1``, identity
            permutation).
        generator: a CPU ``torch.Generator`` for ``m`` and ``π`` (required: library code never
            draws from the global RNG).
    """
    check_nonnegative("alpha", alpha)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if x.shape[0] != y_onehot.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y_onehot has {y_onehot.shape[0]}")
    n = x.shape[0]
    if alpha == 0:
        return x, y_onehot, 1.0, torch.arange(n, device=x.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    m = float(np.random.default_rng(seed).beta(alpha, alpha))
    m = max(m, 1.0 - m)
    perm = torch.randperm(n, generator=generator).to(x.device)
    x_mix = m * x + (1.0 - m) * x.index_select(0, perm)
    y_mix = m * y_onehot + (1.0 - m) * y_onehot.index_select(0, perm)
    return x_mix, y_mix, m, perm


class ELRPlusLoss(nn.Module):
    r"""The ELR+ loss of one network: soft CE on the mixed batch plus the ramped ELR term.

    Per batch, first :meth:`update_targets` with the **other** network's EMA logits on the
    un-mixed batch (cross targets) and the mixup ``m, π``; then call the module on this network's
    logits of the mixed batch:

    .. math::

        t_i &\leftarrow \beta t_i + (1-\beta)\,\frac{\operatorname{softmax}(\bar f(x_i))}{\cdot},
        \qquad q = m\, t_{idx} + (1-m)\, t_{idx[\pi]} \\
        L &= -\tfrac{1}{N}\sum_i \sum_c \tilde y_{ic} \log \tilde p_{ic}
            + w(s)\,\lambda\,\tfrac{1}{N}\sum_i
              \log(1 - \langle\operatorname{clamp}(\tilde p_i), q_i\rangle),
        \qquad \tilde p_i = \operatorname{softmax}(f(\tilde x_i))

    with ``w(s) = sigmoid_rampup(s, coef_ramp_steps)``. With ``reweight_labels=True`` (the
    official CIFAR-100 path) the soft labels are multiplied by ``q`` and re-normalised first.

    Args:
        num_examples: training-set size.
        num_classes: number of classes.
        lam: regularisation strength λ ``>= 0``.
        beta: target momentum β in ``[0, 1)``.
        clamp_eps: probability clamp of the regulariser.
        coef_ramp_steps: ramp length of λ in iterations (0 → no ramp).
        reweight_labels: re-weight the soft labels by the mixed target (CIFAR-100 variant).
    """

    targets: Tensor

    def __init__(
        self,
        num_examples: int,
        num_classes: int,
        lam: float = 3.0,
        beta: float = 0.7,
        clamp_eps: float = 1e-4,
        coef_ramp_steps: int = 0,
        reweight_labels: bool = False,
    ) -> None:
        super().__init__()
        self.num_examples = check_positive_int("num_examples", num_examples)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.lam = float(check_nonnegative("lam", lam))
        self.beta = float(check_in_range("beta", beta, 0.0, 1.0, high_inclusive=False))
        self.clamp_eps = float(
            check_in_range(
                "clamp_eps", clamp_eps, 0.0, 0.5, low_inclusive=False, high_inclusive=False
            )
        )
        self.coef_ramp_steps = int(check_nonnegative("coef_ramp_steps", coef_ramp_steps))
        self.reweight_labels = bool(reweight_labels)
        self.register_buffer("targets", torch.zeros(self.num_examples, self.num_classes))
        self._mixed_targets: Tensor | None = None

    @torch.no_grad()
    def update_targets(
        self, index: Tensor, teacher_logits: Tensor, perm: Tensor | None = None, m: float = 1.0
    ) -> Tensor:
        """Update ``targets[index]`` from the teacher's logits and store the mixed batch target.

        Args:
            index: dataset indices ``(N,)`` of the un-mixed batch.
            teacher_logits: the other network's EMA logits on the un-mixed batch ``(N, C)``.
            perm: the mixup permutation (``None`` → no mixing).
            m: the mixup coefficient.

        Returns:
            The mixed target ``q`` ``(N, C)`` that the next forward uses.
        """
        index = _validate_batch(
            teacher_logits,
            None,
            index,
            self.num_examples,
            self.num_classes,
            self.targets.device,
            stacklevel=4,
        )
        probs = F.softmax(teacher_logits.float(), dim=1)
        update_ema_targets_(self.targets, index, probs, self.beta)
        rows = self.targets.index_select(0, index)
        if perm is not None:
            rows = m * rows + (1.0 - m) * rows.index_select(0, perm.to(rows.device))
        self._mixed_targets = rows
        return rows

    def forward(self, logits: Tensor, soft_labels: Tensor, step: int = 0) -> Tensor:
        """Mean ELR+ loss of the mixed batch (call :meth:`update_targets` first).

        Args:
            logits: this network's logits on the mixed inputs ``(N, C)``.
            soft_labels: the mixed one-hot labels ``(N, C)``.
            step: global iteration, for the λ ramp.
        """
        q = self._mixed_targets
        if q is None or q.shape != logits.shape:
            raise RuntimeError(
                "call update_targets(index, teacher_logits, perm, m) for this batch before the loss"
            )
        if soft_labels.shape != logits.shape:
            raise ValueError(
                f"soft_labels must have shape {tuple(logits.shape)}, got {tuple(soft_labels.shape)}"
            )
        check_finite("logits", logits.detach())
        work = torch.promote_types(logits.dtype, torch.float32)
        logits = logits.to(work)
        labels = soft_labels.to(work)
        if self.reweight_labels:
            labels = labels * q.to(work)
            labels = labels / labels.sum(dim=1, keepdim=True)
        ce = -(labels * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        probs = F.softmax(logits, dim=1).clamp(self.clamp_eps, 1.0 - self.clamp_eps)
        reg = elr_regularizer(probs, q).mean()
        return ce + sigmoid_rampup(step, self.coef_ramp_steps) * self.lam * reg


# --------------------------------------------------------------------------------------------
# Baselines of the paper's comparison
# --------------------------------------------------------------------------------------------


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
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
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
        if not math.isfinite(log_clamp) or log_clamp >= 0:
            raise ValueError(f"log_clamp must be a finite number < 0, got {log_clamp!r}")
        self.log_clamp = float(log_clamp)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
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
