r"""Optimistic online mirror descent (Euclidean: optimistic OGD; entropic: optimistic Hedge).

Paper: Sijia Chen, Yu-Jie Zhang, Wei-Wei Tu, Peng Zhao, Lijun Zhang, "Optimistic Online Mirror
Descent for Bridging Stochastic and Adversarial Online Convex Optimization", ICML 2023,
arXiv:2302.04552.

With regulariser ψ_t, Bregman divergence B, hint M_t, x̂_1 = x_1, M_1 = 0:

.. math::

    x_t = \arg\min_{x\in\mathcal X} \langle M_t, x\rangle + B_{\psi_t}(x, \hat x_t),\qquad
    \hat x_{t+1} = \arg\min_{x\in\mathcal X} \langle g_t, x\rangle + B_{\psi_t}(x, \hat x_t),
    \qquad M_{t+1} = g_t .

* Euclidean ψ_t = ‖x‖²/(2η_t) (:class:`OptimisticOGD`): ``x_t = Π(x̂_t − η_t M_t)``,
  ``x̂_{t+1} = Π(x̂_t − η_t g_t)``.
* Entropic ψ_t = η_t⁻¹ Σ x_i log x_i on the simplex (``OptimisticOMD(mirror="entropic")``,
  optimistic Hedge): ``x_t ∝ x̂_t e^{−η_t M_t}``, ``x̂_{t+1} ∝ x̂_t e^{−η_t g_t}``.

**Step sizes** (η_t is fixed before x_t and uses only rounds s ≤ t−1; both steps of round t use it):

================== =========================================================================
``"adaptive"``     ``η_t = min{ D / sqrt(δ + Σ_{s<t} ‖g_s − M_s‖²_*), 1/(4L) }`` (convex + smooth;
                   ``D`` = domain diameter, or ``sqrt(ln d)`` for the entropic map with the
                   dual norm ``‖·‖_∞``; without ``smoothness`` there is no cap — a warning says so)
``"strongly_convex"`` ``η_t = 2 / (λt + 8L)`` (``2/(λt)`` without ``smoothness``)
``"fixed"``        ``η_t = lr``
================== =========================================================================

Choice: the strongly convex step ``2/(λt + 8L)`` keeps η_t ≤ 1/(4L) from round 1 (``2/(λt)``
only from t ≥ 8L/λ).

Example::

    import torch
    from optforge.online import Ball, OptimisticOGD

    learner = OptimisticOGD(torch.zeros(10), Ball(1.0), smoothness=1.0)
    for c in targets:                      # f_t(x) = ½‖x − c_t‖²
        x = learner.predict()
        learner.update(x - c)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive
from optforge.online.domains import Domain, Simplex
from optforge.online.learners._steps import Hint, Step, _check_step, _warn_no_smoothness
from optforge.online.learners.base import OnlineLearner

__all__ = ["OptimisticOGD", "OptimisticOMD"]

Mirror = Literal["euclidean", "entropic"]


class OptimisticOMD(OnlineLearner):
    """Optimistic online mirror descent with a Euclidean or entropic mirror map.

    Args:
        x0: starting point ``x̂_1`` (shape ``(*batch, d)``), inside ``domain``.
        domain: the feasible set; the entropic map needs :class:`Simplex` and ``x0 > 0``.
        mirror: ``"euclidean"`` (optimistic OGD) or ``"entropic"`` (optimistic Hedge).
        step: ``"adaptive"``, ``"strongly_convex"`` or ``"fixed"`` (see the module docstring).
        lr: the fixed step size (``step="fixed"``); a float or a tensor of shape ``batch``.
        smoothness: ``L``; caps the adaptive step at ``1/(4L)`` and enters the strongly convex
            step. Recommended: without it the adaptive step is uncapped (a warning says so).
        strong_convexity: ``λ`` for ``step="strongly_convex"``.
        delta: ``δ ≥ 0`` in the adaptive step's denominator.
        hint: ``"last_grad"`` (the paper's ``M_{t+1} = g_t``) or ``"zero"`` (plain OMD).
    """

    _state_names = ("xhat", "hint_vec", "variation")

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        mirror: Mirror = "euclidean",
        step: Step = "adaptive",
        lr: float | Tensor | None = None,
        smoothness: float | None = None,
        strong_convexity: float | None = None,
        delta: float = 1e-8,
        hint: Hint = "last_grad",
    ) -> None:
        super().__init__(x0, domain)
        if mirror not in ("euclidean", "entropic"):
            raise ValueError(f"mirror must be 'euclidean' or 'entropic', got {mirror!r}")
        if hint not in ("last_grad", "zero"):
            raise ValueError(f"hint must be 'last_grad' or 'zero', got {hint!r}")
        if mirror == "entropic":
            if not isinstance(domain, Simplex):
                raise ValueError("mirror='entropic' needs a Simplex domain")
            if bool((self.x0 <= 0).any()):
                raise ValueError("x0 must be > 0 everywhere for mirror='entropic'")
        self.mirror, self.hint = mirror, hint
        self.delta = float(check_nonnegative("delta", delta))
        self.smoothness = (
            None if smoothness is None else float(check_positive("smoothness", smoothness))
        )
        self.step, self.lr, self.strong_convexity = _check_step(step, lr, strong_convexity, self.x0)
        if step == "adaptive" and mirror == "euclidean" and self.smoothness is None:
            _warn_no_smoothness(type(self).__name__)
        if step == "adaptive":
            d = self.x0.shape[-1]
            self.radius = math.sqrt(math.log(d)) if mirror == "entropic" else domain.diameter
            if not math.isfinite(self.radius):
                raise ValueError("step='adaptive' needs a bounded domain; pass step='fixed' and lr")
        self.xhat = self.x0.clone()
        self.hint_vec = torch.zeros_like(self.x0)
        self.variation = torch.zeros(
            *self.x0.shape[:-1], 1, dtype=self.x0.dtype, device=self.x0.device
        )
        self._eta: Tensor | float | None = None
        self._tiny = torch.finfo(self.x0.dtype).tiny

    def step_size(self) -> Tensor | float:
        """η_t for the coming round (uses rounds ``s ≤ t − 1`` only)."""
        t = self.t + 1
        if self.step == "fixed":
            return self.lr
        if self.step == "strongly_convex":
            extra = 0.0 if self.smoothness is None else 8.0 * self.smoothness
            return 2.0 / (self.strong_convexity * t + extra)
        denom = torch.clamp(self.delta + self.variation, min=self._tiny).sqrt()
        eta = denom.reciprocal() * self.radius  # = self.radius / denom (Tensor.__rdiv__)
        if self.smoothness is not None:
            eta = torch.clamp(eta, max=1.0 / (4.0 * self.smoothness))
        return eta

    def _mirror_step(self, center: Tensor, direction: Tensor, eta: Tensor | float) -> Tensor:
        if self.mirror == "euclidean":
            return self.domain.project(center - eta * direction)
        z = -eta * direction
        z = z - z.amax(dim=-1, keepdim=True)
        w = center * torch.exp(z)
        return w / w.sum(dim=-1, keepdim=True)

    def _predict(self) -> Tensor:
        self._eta = self.step_size()
        return self._mirror_step(self.xhat, self.hint_vec, self._eta)

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        eta = self._eta
        diff = grad - self.hint_vec
        if self.mirror == "euclidean":
            self.variation = self.variation + (diff**2).sum(dim=-1, keepdim=True)
        else:
            self.variation = self.variation + diff.abs().amax(dim=-1, keepdim=True) ** 2
        self.xhat = self._mirror_step(self.xhat, grad, eta)
        if hint is not None:
            self.hint_vec = hint
        elif self.hint == "last_grad":
            self.hint_vec = grad
        else:
            self.hint_vec = torch.zeros_like(grad)


class OptimisticOGD(OptimisticOMD):
    """Optimistic online gradient descent: :class:`OptimisticOMD` with the Euclidean map.

    ``x_t = Π(x̂_t − η_t M_t)``, ``x̂_{t+1} = Π(x̂_t − η_t g_t)``, ``M_{t+1} = g_t``.
    Same arguments as :class:`OptimisticOMD` except ``mirror``.
    """

    def __init__(self, x0: Tensor, domain: Domain, **kwargs: Any) -> None:
        if "mirror" in kwargs:
            raise TypeError("OptimisticOGD is Euclidean; use OptimisticOMD for another mirror map")
        super().__init__(x0, domain, mirror="euclidean", **kwargs)
