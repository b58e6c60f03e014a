"""Directional attacks: steer a network's output ``Φ(x)`` along a target direction ``u``.

Paper: P.-Y. Bouchet, T. Vidal, "Optimization by Directional Attacks: Solving Problems with
Neural Network Surrogates", arXiv 2510.01461 (2025). The operator follows the official code
(``PierreYvesBouchet/Optimization-by-Directional-Attacks``), which runs a *targeted*
``torchattacks`` attack with the float vector ``u`` as a soft label on the reparametrised model
``Φ_{x,r}(t) = Φ(x + 2r(t - ½)) - Φ(x)``, ``t ∈ [0, 1]ⁿ``, ``ε = ½``. Written natively here:

* loss ``"soft_ce"`` (faithful): ``L(d) = -Σ_j u_j log softmax(Φ(x+d) - Φ(x))_j``. At ``d = 0``
  the logits are 0, so ``-∇_z L = u - mean(u)·1`` and

  ``d_FGSM = r · sign(J_Φ(x)ᵀ (u - mean(u)·1))``

  (a corner of the ℓ∞ ball; entries are 0 where the gradient is exactly 0). Soft-target cross
  entropy is blind to the component of ``u`` along ``1``.
* ``"linear"``: ``L(d) = -uᵀ(Φ(x+d) - Φ(x))``; FGSM gives ``r sign(J_Φ(x)ᵀ u)``, i.e.
  ``r sign(∇ₓ f(Φ(x)))`` when ``u = ∇f(Φ(x))``.
* ``"cosine"``: ``L(d) = -cos∠(Φ(x+d) - Φ(x), u)`` (at ``d = 0`` torch's ε-clamped cosine
  reduces to the linear loss, so it only differs for PGD).

``method="pgd"`` takes ``steps`` signed-gradient steps of size ``step_frac · r`` from ``d = 0``
(no random start), projecting onto the ℓ∞ ball (and the box ``bounds`` if given). The official
torchattacks defaults (α = 2/255 in t-space, 10 steps) correspond to ``step_frac = 4/255`` and
never reach the ball's boundary; the default ``step_frac = 0.25`` does.

Gradients are taken with ``torch.autograd.grad`` with respect to ``d`` only: the network's
parameters and their ``.grad`` are never touched. A network in training mode is switched to
``eval()`` with a warning (dropout and batch-norm updates would make the attack stochastic).

Example::

    >>> import torch
    >>> phi = torch.nn.Linear(3, 2)
    >>> d = directional_attack(phi, torch.zeros(3), torch.tensor([1.0, -1.0]), 0.1)
    >>> float(d.abs().max()) <= 0.1 + 1e-6
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from optforge._core import check_positive, check_positive_int, check_tensor

AttackMethod = Literal["fgsm", "pgd"]
AttackLoss = Literal["soft_ce", "linear", "cosine"]

__all__ = ["DirectionalAttack", "directional_attack"]


def directional_attack(
    phi: nn.Module,
    x: torch.Tensor,
    direction: torch.Tensor,
    radius: float,
    *,
    method: AttackMethod = "fgsm",
    loss: AttackLoss = "soft_ce",
    steps: int = 10,
    step_frac: float = 0.25,
    active: torch.Tensor | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Perturbation ``d`` with ``‖d‖∞ ≤ radius`` moving ``Φ(x+d) - Φ(x)`` along ``direction``.

    Args:
        phi: The network ``Φ: Rⁿ → Rᵐ`` (called on a 1-D input; must return a 1-D output).
        x: Incumbent (1-D tensor).
        direction: Target direction ``u`` in output space (length = number of active outputs).
        radius: ℓ∞ radius ``r > 0``.
        method: ``"fgsm"`` (one signed-gradient step to the ball's corner) or ``"pgd"``.
        loss: ``"soft_ce"`` (official), ``"linear"`` or ``"cosine"``.
        steps: PGD iterations.
        step_frac: PGD step size as a fraction of ``radius``.
        active: Optional indices (or boolean mask) of the outputs that ``direction`` refers to.
        bounds: Optional box ``(lower, upper)``; ``x + d`` is projected onto it.

    Returns:
        ``d`` (same shape, dtype and device as ``x``).
    """
    if not isinstance(phi, nn.Module) and not callable(phi):
        raise TypeError("phi must be an nn.Module or a callable")
    param = next(phi.parameters(), None) if isinstance(phi, nn.Module) else None
    check_tensor("x", x, ndim=1, device=None if param is None else param.device, owner="phi")
    check_tensor("direction", direction, ndim=1, device=x.device, owner="x")
    check_positive("radius", radius)
    if method not in ("fgsm", "pgd"):
        raise ValueError(f"method must be 'fgsm' or 'pgd', got {method!r}")
    if loss not in ("soft_ce", "linear", "cosine"):
        raise ValueError(f"loss must be 'soft_ce', 'linear' or 'cosine', got {loss!r}")
    check_positive_int("steps", steps)
    check_positive("step_frac", step_frac)
    if isinstance(phi, nn.Module) and phi.training:
        warnings.warn("phi was in training mode; switched to eval()", UserWarning, stacklevel=2)
        phi.eval()
    x = x.detach()
    with torch.no_grad():
        y0 = _select(phi(x), active)
    if not torch.isfinite(y0).all():
        raise ValueError("phi(x) contains non-finite values (NaN or inf)")
    if y0.shape != direction.shape:
        raise ValueError(
            f"direction has {direction.numel()} entries but phi has {y0.numel()} active outputs"
        )
    u = direction.to(y0)

    def loss_fn(d: torch.Tensor) -> torch.Tensor:
        z = _select(phi(x + d), active) - y0
        if loss == "soft_ce":
            return -(u * torch.log_softmax(z, dim=-1)).sum()
        if loss == "linear":
            return -(u * z).sum()
        return -torch.nn.functional.cosine_similarity(z, u, dim=0)

    d = torch.zeros_like(x)
    n_steps, alpha = (1, radius) if method == "fgsm" else (steps, step_frac * radius)
    for _ in range(n_steps):
        d = d.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(d), d)
        if not torch.isfinite(grad).all():
            raise ValueError("the attack gradient is not finite (check phi and direction)")
        d = (d.detach() - alpha * grad.sign()).clamp(-radius, radius)
        if bounds is not None:
            d = torch.maximum(torch.minimum(x + d, bounds[1]), bounds[0]) - x
    return d.detach()


@dataclass(frozen=True)
class DirectionalAttack:
    """A configured attack operator (see :func:`directional_attack`).

    Attributes:
        method: ``"fgsm"`` or ``"pgd"``.
        loss: ``"soft_ce"``, ``"linear"`` or ``"cosine"``.
        steps: PGD iterations.
        step_frac: PGD step size as a fraction of the radius.
    """

    method: AttackMethod = "fgsm"
    loss: AttackLoss = "soft_ce"
    steps: int = 10
    step_frac: float = 0.25

    def __post_init__(self) -> None:
        if self.method not in ("fgsm", "pgd"):
            raise ValueError(f"method must be 'fgsm' or 'pgd', got {self.method!r}")
        if self.loss not in ("soft_ce", "linear", "cosine"):
            raise ValueError(f"loss must be 'soft_ce', 'linear' or 'cosine', got {self.loss!r}")
        check_positive_int("steps", self.steps)
        check_positive("step_frac", self.step_frac)

    def __call__(
        self,
        phi: nn.Module,
        x: torch.Tensor,
        direction: torch.Tensor,
        radius: float,
        active: torch.Tensor | None = None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the attack; returns ``d`` with ``‖d‖∞ ≤ radius``."""
        return directional_attack(
            phi,
            x,
            direction,
            radius,
            method=self.method,
            loss=self.loss,
            steps=self.steps,
            step_frac=self.step_frac,
            active=active,
            bounds=bounds,
        )


def _select(y: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    y = y.reshape(-1)
    return y if active is None else y[active]
