r"""ELR+: two networks, cross targets from each other's EMA, mixup, and the ramped ELR term.

Paper: Liu et al., "Early-Learning Regularization Prevents Memorization of Noisy Labels",
NeurIPS 2020, arXiv:2007.00151; official code ``shengliu66/ELR`` (``ELR_plus/``). Each of two
networks is trained with :class:`ELRPlusLoss` on mixup batches (:func:`mixup_batch`); its
temporal targets come from the *other* network's weight average
(:class:`~optforge.losses.ModelEMA`).

Example::

    gen = torch.Generator().manual_seed(0)
    criterion = ELRPlusLoss(num_examples=n, num_classes=10, lam=3.0, beta=0.7)
    x_mix, y_mix, m, perm = mixup_batch(x, F.one_hot(y, 10).float(), alpha=1.0, generator=gen)
    criterion.update_targets(index, other_ema(x), perm, m)
    loss = criterion(model(x_mix), y_mix, step=it)

Choice: :func:`mixup_batch` takes a required ``torch.Generator`` (no global RNG in library code).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import (
    check_device,
    check_finite,
    check_floating,
    check_in_range,
    check_integer,
    check_is_tensor,
    check_nonnegative,
    check_nonnegative_values,
    check_not_meta,
    check_positive_int,
)
from optforge.losses.elr.ema import sigmoid_rampup
from optforge.losses.elr.loss import (
    _check_logits,
    _validate_batch,
    elr_regularizer,
    update_ema_targets_,
)

__all__ = ["ELRPlusLoss", "mixup_batch"]


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
        check_in_range("m", m, 0.0, 1.0)
        if perm is not None:
            check_is_tensor("perm", perm)
            check_not_meta("perm", perm)
            check_integer("perm", perm)
            n = teacher_logits.shape[0] if isinstance(teacher_logits, Tensor) else -1
            if perm.shape != (n,) or not torch.equal(
                perm.detach().cpu().sort().values, torch.arange(n)
            ):
                raise ValueError(f"perm must be a permutation of range({n}) (from mixup_batch)")
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
        _check_logits(logits)
        check_is_tensor("soft_labels", soft_labels)
        check_not_meta("soft_labels", soft_labels)
        if soft_labels.shape != logits.shape:
            raise ValueError(
                f"soft_labels must have shape {tuple(logits.shape)}, got {tuple(soft_labels.shape)}"
            )
        check_device("soft_labels", soft_labels, logits.device, owner="the logits")
        check_floating("soft_labels", soft_labels)
        check_finite("soft_labels", soft_labels)
        check_nonnegative_values("soft_labels", soft_labels)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
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
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    for name, value in (("x", x), ("y_onehot", y_onehot)):
        check_is_tensor(name, value)
        check_not_meta(name, value)
        if value.dim() == 0 or value.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch, got shape {tuple(value.shape)}")
    check_device("y_onehot", y_onehot, x.device, owner="x")
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
