"""First-order baselines: online gradient descent, FTRL and optimistic FTRL.

Online gradient descent (Zinkevich 2003), linearised follow the regularised leader and its
optimistic form (Sachs, Hadiji, van Erven, Guzmán 2022), the baselines of Chen et al.,
"Optimistic Online Mirror Descent for Bridging Stochastic and Adversarial Online Convex
Optimization", ICML 2023, arXiv:2302.04552.

Choice: :class:`OGD` and :class:`FTRL` use ``η_t = D/(G_t√t)`` with ``G_t`` the running max of
‖g_s‖ (or ``grad_bound``); :class:`OptimisticFTRL` uses the adaptive step of
:class:`~optforge.online.OptimisticOGD`.

Example::

    learner = OGD(torch.zeros(10), Ball(1.0))
    for c in targets:                      # f_t(x) = ½‖x − c_t‖²
        x = learner.predict()
        learner.update(x - c)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive
from optforge.online.domains import Domain
from optforge.online.learners._steps import (
    Hint,
    Step,
    _baseline_eta,
    _check_step,
    _warn_no_smoothness,
)
from optforge.online.learners.base import OnlineLearner

__all__ = ["FTRL", "OGD", "OptimisticFTRL"]


class OGD(OnlineLearner):
    """Projected online gradient descent ``x_{t+1} = Π(x_t − η_t g_t)`` (Zinkevich 2003).

    Args:
        x0: starting point inside ``domain``.
        domain: the feasible set.
        step: ``"adaptive"`` (``η_t = D/(G_t√t)``, ``G_t = max_{s≤t} ‖g_s‖`` or ``grad_bound``),
            ``"strongly_convex"`` (``1/(λt)``) or ``"fixed"`` (``lr``).
        lr: the fixed step size.
        strong_convexity: ``λ`` for ``step="strongly_convex"``.
        grad_bound: ``G``; when given, the adaptive step uses it instead of the running max.
    """

    _state_names = ("x", "grad_max")

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        step: Step = "adaptive",
        lr: float | Tensor | None = None,
        strong_convexity: float | None = None,
        grad_bound: float | None = None,
    ) -> None:
        super().__init__(x0, domain)
        self.step, self.lr, self.strong_convexity = _check_step(step, lr, strong_convexity, self.x0)
        self.grad_bound = (
            None if grad_bound is None else float(check_positive("grad_bound", grad_bound))
        )
        if step == "adaptive" and not math.isfinite(domain.diameter):
            raise ValueError("step='adaptive' needs a bounded domain; pass step='fixed' and lr")
        self._tiny = torch.finfo(self.x0.dtype).tiny
        self.x = self.x0.clone()
        self.grad_max = torch.zeros(
            *self.x0.shape[:-1], 1, dtype=self.x0.dtype, device=self.x0.device
        )

    def _predict(self) -> Tensor:
        return self.x

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
        self.grad_max = torch.maximum(self.grad_max, norm)
        eta = _baseline_eta(self, self.t + 1)
        self.x = self.domain.project(self.x - eta * grad)


class FTRL(OnlineLearner):
    """Linearised follow the regularised leader with a Euclidean regulariser centred at ``x0``.

    ``x_{t+1} = argmin_x ⟨S_t + M_{t+1}, x⟩ + ‖x − x_1‖²/(2η) = Π(x_1 − η (S_t + M_{t+1}))`` with
    ``S_t = Σ_{s≤t} g_s``. Plain FTRL has ``M ≡ 0`` and ``η = D/(G_t√t)`` as :class:`OGD`.

    Args:
        x0: the regulariser's centre and ``x_1``.
        domain: the feasible set.
        step: ``"adaptive"`` or ``"fixed"``.
        lr: the fixed step size.
        grad_bound: ``G`` for the adaptive step (default: running max of ‖g_s‖).
    """

    _state_names = ("grad_sum", "grad_max", "hint_vec", "variation")
    _optimistic = False

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        step: Literal["adaptive", "fixed"] = "adaptive",
        lr: float | Tensor | None = None,
        grad_bound: float | None = None,
        smoothness: float | None = None,
        delta: float = 1e-8,
        hint: Hint | None = None,
    ) -> None:
        super().__init__(x0, domain)
        if step not in ("adaptive", "fixed"):
            raise ValueError(f"step must be 'adaptive' or 'fixed' for FTRL, got {step!r}")
        self.step, self.lr, _ = _check_step(step, lr, None, self.x0)
        self.hint = hint or ("last_grad" if self._optimistic else "zero")
        if self.hint not in ("last_grad", "zero"):
            raise ValueError(f"hint must be 'last_grad' or 'zero', got {self.hint!r}")
        self.grad_bound = (
            None if grad_bound is None else float(check_positive("grad_bound", grad_bound))
        )
        self.smoothness = (
            None if smoothness is None else float(check_positive("smoothness", smoothness))
        )
        self.delta = float(check_nonnegative("delta", delta))
        if step == "adaptive" and not math.isfinite(domain.diameter):
            raise ValueError("step='adaptive' needs a bounded domain; pass step='fixed' and lr")
        if self._optimistic and step == "adaptive" and self.smoothness is None:
            _warn_no_smoothness(type(self).__name__)
        self._tiny = torch.finfo(self.x0.dtype).tiny
        zeros1 = torch.zeros(*self.x0.shape[:-1], 1, dtype=self.x0.dtype, device=self.x0.device)
        self.grad_sum = torch.zeros_like(self.x0)
        self.hint_vec = torch.zeros_like(self.x0)
        self.grad_max, self.variation = zeros1, zeros1.clone()

    def _eta(self) -> Tensor | float:
        if self.step == "fixed":
            return self.lr
        if self._optimistic:  # the self-confident step of optimistic OMD (A)
            denom = torch.clamp(self.delta + self.variation, min=self._tiny)
            eta = denom.sqrt().reciprocal() * self.domain.diameter  # = D / √denom (__rdiv__)
            if self.smoothness is not None:
                eta = torch.clamp(eta, max=1.0 / (4.0 * self.smoothness))
            return eta
        return _baseline_eta(self, self.t)

    def _predict(self) -> Tensor:
        if self.t == 0 and not self._optimistic:
            return self.x0.clone()
        return self.domain.project(self.x0 - self._eta() * (self.grad_sum + self.hint_vec))

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
        self.grad_max = torch.maximum(self.grad_max, norm)
        self.variation = self.variation + ((grad - self.hint_vec) ** 2).sum(dim=-1, keepdim=True)
        self.grad_sum = self.grad_sum + grad
        if hint is not None and self.hint == "last_grad":
            self.hint_vec = hint
        elif self.hint == "last_grad":
            self.hint_vec = grad


class OptimisticFTRL(FTRL):
    """Optimistic FTRL (Sachs et al. 2022): :class:`FTRL` with ``M_{t+1} = g_t`` and the adaptive
    step ``η_t = min{D/sqrt(δ + Σ_{s<t}‖g_s − M_s‖²), 1/(4L)}`` of :class:`OptimisticOGD`."""

    _optimistic = True
