r"""SSO's surrogate in target space: :class:`TargetSurrogateLoss` and the oracle call.

For an objective :math:`h(\theta) = \ell(f(\theta))`, with batch targets :math:`z_t = f_S(\theta_t)`
(detached) and the one expensive target gradient :math:`\hat G_t = \nabla_z \ell_S(z_t)`
(:func:`target_gradient`), the surrogate of outer step :math:`t` is

.. math::

    \tilde g_t(\theta) = \ell_S(z_t) + \langle \hat G_t, f_S(\theta) - z_t \rangle
        + \frac{w}{2\eta_t}\,\lVert f_S(\theta) - z_t \rVert^2 ,

where :math:`w = 1/b` when :math:`\ell_S` is the mean over the :math:`b` examples of the batch
(``reduction="mean"``) and :math:`w = 1` when it is their sum, so :math:`\eta` is a per-example
step in target units, independent of the batch size. Over the targets alone the minimiser is
:math:`z_t - \eta G` with per-example gradients :math:`G = \hat G / w` (an SGD step in target
space).

Example::

    z_t = model(x).detach()
    G = target_gradient(lambda z: F.cross_entropy(z, y), z_t)     # the one oracle call
    surrogate = TargetSurrogateLoss(z_t, G, eta=1.0)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(10):
        inner.zero_grad(); surrogate(model(x)).backward(); inner.step()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import (
    check_choice,
    check_device,
    check_is_tensor,
    check_not_meta,
    check_positive,
    check_tensor,
)

__all__ = ["SumOrMean", "TargetSurrogateLoss", "target_gradient"]

SumOrMean = Literal["mean", "sum"]
"""How the target loss reduces over the batch; SSO's weight ``w`` needs ``"mean"`` or ``"sum"``."""
_REDUCTIONS = ("mean", "sum")


class TargetSurrogateLoss(nn.Module):
    r"""The SSO surrogate :math:`\ell_t + \langle\hat G, z-z_t\rangle + \frac{w}{2\eta}\|z-z_t\|^2`.

    Built from a snapshot (targets :math:`z_t`, target gradient :math:`\hat G` of the batch loss,
    optionally the loss value :math:`\ell_t`); called on the current targets :math:`f(\theta)`.
    Composable with any ``torch.optim`` optimizer for the inner loop.

    Args:
        targets_t: the batch targets at the snapshot, shape ``(b, ...)`` (detached internally).
        target_grad: :math:`\nabla_z \ell_S(z_t)`, same shape as ``targets_t``.
        eta: the target step :math:`\eta > 0` (per example, in target units).
        reduction: ``"mean"`` if :math:`\ell_S` averages over the ``b`` examples (first
            dimension), ``"sum"`` if it sums them; sets :math:`w = 1/b` or 1.
        loss_t: the constant :math:`\ell_S(z_t)` (0 by default).
    """

    def __init__(
        self,
        targets_t: Tensor,
        target_grad: Tensor,
        eta: float,
        reduction: SumOrMean = "mean",
        loss_t: float | Tensor = 0.0,
    ) -> None:
        super().__init__()
        check_positive("eta", eta)
        check_choice("reduction", reduction, _REDUCTIONS)
        if not isinstance(targets_t, Tensor) or not isinstance(target_grad, Tensor):
            raise TypeError("targets_t and target_grad must be tensors")
        check_tensor("targets_t", targets_t)
        check_tensor("target_grad", target_grad, device=targets_t.device, owner="targets_t")
        if target_grad.shape != targets_t.shape:
            raise ValueError(
                f"target_grad has shape {tuple(target_grad.shape)}, expected the targets' shape "
                f"{tuple(targets_t.shape)}"
            )
        self.eta = float(eta)
        self.reduction = reduction
        self.weight = _reduction_weight(targets_t, reduction)
        self.register_buffer("targets_t", targets_t.detach().clone())
        self.register_buffer("target_grad", target_grad.detach().clone())
        self.register_buffer("loss_t", torch.as_tensor(loss_t, dtype=targets_t.dtype).detach())

    def forward(self, targets: Tensor) -> Tensor:
        """The surrogate's value at ``targets`` (= f(θ) on the snapshot's batch)."""
        check_is_tensor("targets", targets)
        check_not_meta("targets", targets)
        check_device("targets", targets, self.targets_t.device, owner="the snapshot")
        if targets.shape != self.targets_t.shape:
            raise ValueError(
                f"the model's output has shape {tuple(targets.shape)} but the surrogate's targets "
                f"have shape {tuple(self.targets_t.shape)}"
            )
        return self._unchecked()(targets)

    def _unchecked(self) -> Callable[[Tensor], Tensor]:
        """The surrogate as a plain function of ``targets`` without the argument checks nor the
        module-call overhead: the same operations in the same order as :meth:`forward` (equal
        values bit for bit). For hot loops (SSO's inner loop) whose caller has already checked
        that ``targets`` is a tensor of the snapshot's shape on its device."""
        targets_t, target_grad, loss_t = self.targets_t, self.target_grad, self.loss_t
        coef = self.weight / (2.0 * self.eta)

        def value(targets: Tensor) -> Tensor:
            diff = targets - targets_t
            linear = (target_grad * diff).sum()
            return loss_t + linear + coef * (diff * diff).sum()

        return value


def target_gradient(target_loss: Callable[[Tensor], Tensor], targets: Tensor) -> Tensor:
    """``∇_z target_loss(z)`` at the detached ``targets``: the one "expensive" oracle call.

    One ``torch.autograd.grad`` call (no Jacobian): for per-example-separable losses it gives every
    example's target gradient at once.
    """
    if not callable(target_loss):
        raise TypeError(f"target_loss must be callable, got {type(target_loss).__name__}")
    check_tensor("targets", targets, finite=False)
    return _loss_and_target_grad(target_loss, targets)[1]


def _reduction_weight(targets: Tensor, reduction: str) -> float:
    """``w`` of the surrogate: 1/b for a mean over the first dimension, 1 for a sum."""
    if reduction == "sum":
        return 1.0
    return 1.0 / (targets.shape[0] if targets.dim() > 0 else 1)


def _loss_and_target_grad(
    target_loss: Callable[[Tensor], Tensor], targets: Tensor
) -> tuple[Tensor, Tensor]:
    z = targets.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = target_loss(z)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"target_loss must return a scalar tensor, got {shape}")
    if not loss.requires_grad:
        raise ValueError("target_loss(z) does not depend on z (no gradient path to the targets)")
    (grad,) = torch.autograd.grad(loss.reshape(()), z, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(z)
    return loss.detach().reshape(()), grad
