"""Online Newton step for exp-concave losses: optimistic ONS and the original ONS.

Optimistic ONS is optimistic online mirror descent with ψ_t = ½‖x‖²_{U_t} (Chen et al., ICML
2023, arXiv:2302.04552): ``U_t = δI + (β/2) Σ_{s<t} v_s v_sᵀ``,
``x_t = Π^{U_t}(x̂_t − U_t^{-1} M_t)``, ``x̂_{t+1} = Π^{U_t}(x̂_t − U_t^{-1} g_t)``. The baseline
is the online Newton step of Hazan, Agarwal, Kale 2007. ``Π^U`` is the projection in the
``U``-norm (``Domain.project(y, metric=U)``).

Choices: optimistic ONS accumulates ``g_s g_sᵀ`` by default (``outer="grad"``, classic ONS);
``"diff"`` accumulates ``(g_s − M_s)(g_s − M_s)ᵀ``. :class:`ONS` is Hazan et al.'s original
(``A_t`` includes g_t).

**Default δ = max{1/(βD²), 4L}** (``4L`` only when ``smoothness`` is given):

* *ONS's own regulariser.* ONS moves by ``x_{t+1} = Π^{A_t}(x_t − β⁻¹A_t⁻¹g_t)`` with
  ``A_t = εI + Σ_{s≤t} g_s g_sᵀ`` and ``ε = 1/(β²D²)``. Multiplying the metric by β,
  that is the step ``U⁻¹g_t`` in the metric ``U = βA_t = βεI + βΣ g_s g_sᵀ``, whose
  regulariser is ``βε = 1/(βD²)``. With the same δ, optimistic ONS starts from the same metric
  as ONS.
* *The bound.* The optimistic-OMD analysis with ``ψ_t = ½‖x‖²_{U_t}`` pays
  ``B_{ψ_1}(u, x̂_1) ≤ ½δD²`` for the initial regulariser. With ``δ = 1/(βD²)`` that is
  ``1/(2β)``, of the order of the exp-concave ``(d/β)·log(…)`` term, so the
  ``O(d log(σ²_{1:T} + Σ²_{1:T}))`` rate keeps its constant. A larger δ only scales the step
  down: ``U_t ≥ δI`` bounds every step by ``‖g‖/δ``.
* *Smoothness.* The same analysis bounds the regret by ``Σ‖g_t − M_t‖²_{U_t⁻¹}`` minus
  ``¼‖x̂_{t+1} − x_t‖²_{U_t} + ½‖x_t − x̂_t‖²_{U_t}``. The negative terms are at least
  ``(δ/8)‖x_t − x_{t−1}‖²``. Splitting ``g_t − M_t`` at ``x_{t−1}`` gives the smoothness part
  ``2L²‖x_t − x_{t−1}‖²_{U_t⁻¹} ≤ (2L²/δ)‖x_t − x_{t−1}‖²``. The negative terms cancel it when
  ``δ ≥ 4L``. Because ``β ≤ 1/(8GD)``, ``1/(βD²) ≥ 8G/D``. This already exceeds 4L whenever
  ``G ≥ LD/2`` (a quadratic centred in the domain, for example). The max only matters for
  flat losses with large L.

The former default ``1 + 8L/β`` (257 on the reproduction's least-squares streams, where
``1/(βD²) = 8``) took steps about 30× smaller than ONS; see the docs page for the measured
effect.

Example::

    learner = OptimisticONS(torch.zeros(5), Ball(1.0), exp_concavity=0.25, grad_bound=2.0)
    x = learner.predict()
    learner.update(grad_at(x))
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_positive
from optforge.online.domains import Domain
from optforge.online.learners._steps import Hint
from optforge.online.learners.base import OnlineLearner

__all__ = ["ONS", "OptimisticONS"]


class OptimisticONS(OnlineLearner):
    """Optimistic online Newton step for α-exp-concave, smooth losses.

    ``U_t = δI + (β/2) Σ_{s<t} v_s v_sᵀ`` with ``β = ½ min{1/(4GD), α}`` and ``v_s = g_s``
    (``outer="grad"``) or ``g_s − M_s`` (``"diff"``); ``x_t = Π^{U_t}(x̂_t − U_t^{-1}M_t)``,
    ``x̂_{t+1} = Π^{U_t}(x̂_t − U_t^{-1}g_t)``. O(d²) memory, O(d³) per round.

    Args:
        x0: starting point inside ``domain`` (a :class:`Ball`, :class:`Box` or unconstrained).
        domain: the feasible set (needs a finite diameter).
        exp_concavity: ``α > 0``.
        grad_bound: ``G > 0``.
        smoothness: ``L``; raises the default ``δ`` to ``4L`` if that is larger.
        delta: ``δ > 0`` (overrides the default ``max{1/(βD²), 4L}``, see the module doc).
        outer: ``"grad"`` or ``"diff"``.
        hint: ``"last_grad"`` or ``"zero"`` (plain OMD with the ONS metric).
    """

    _state_names = ("xhat", "hint_vec", "metric")

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        exp_concavity: float,
        grad_bound: float,
        smoothness: float | None = None,
        delta: float | None = None,
        outer: Literal["grad", "diff"] = "grad",
        hint: Hint = "last_grad",
    ) -> None:
        super().__init__(x0, domain)
        alpha = float(check_positive("exp_concavity", exp_concavity))
        g = float(check_positive("grad_bound", grad_bound))
        if not math.isfinite(domain.diameter):
            raise ValueError("OptimisticONS needs a bounded domain (finite diameter)")
        if outer not in ("grad", "diff"):
            raise ValueError(f"outer must be 'grad' or 'diff', got {outer!r}")
        if hint not in ("last_grad", "zero"):
            raise ValueError(f"hint must be 'last_grad' or 'zero', got {hint!r}")
        self.beta = 0.5 * min(1.0 / (4.0 * g * domain.diameter), alpha)
        if smoothness is not None:
            check_positive("smoothness", smoothness)
        if delta is None:
            delta = 1.0 / (self.beta * domain.diameter**2)
            if smoothness is not None:
                delta = max(delta, 4.0 * smoothness)
        self.delta = float(check_positive("delta", delta))
        self.outer, self.hint = outer, hint
        d = self.x0.shape[-1]
        eye = torch.eye(d, dtype=self.x0.dtype, device=self.x0.device)
        self.metric = (self.delta * eye).expand(*self.x0.shape[:-1], d, d).clone()
        self.xhat = self.x0.clone()
        self.hint_vec = torch.zeros_like(self.x0)

    def _newton_step(self, center: Tensor, direction: Tensor) -> Tensor:
        move = torch.linalg.solve(self.metric, direction.unsqueeze(-1)).squeeze(-1)
        return self.domain.project(center - move, metric=self.metric)

    def _predict(self) -> Tensor:
        return self._newton_step(self.xhat, self.hint_vec)

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        self.xhat = self._newton_step(self.xhat, grad)
        v = grad if self.outer == "grad" else grad - self.hint_vec
        self.metric = self.metric + 0.5 * self.beta * v.unsqueeze(-1) * v.unsqueeze(-2)
        if hint is not None:
            self.hint_vec = hint
        elif self.hint == "last_grad":
            self.hint_vec = grad
        else:
            self.hint_vec = torch.zeros_like(grad)


class ONS(OnlineLearner):
    """Online Newton step (Hazan, Agarwal, Kale 2007), the non-optimistic baseline.

    ``A_t = εI + Σ_{s≤t} g_s g_sᵀ``, ``x_{t+1} = Π^{A_t}(x_t − β⁻¹ A_t^{-1} g_t)`` with
    ``β = ½ min{1/(4GD), α}`` and ``ε = 1/(β²D²)`` unless ``delta`` is given.

    Args:
        x0: starting point inside ``domain``.
        domain: the feasible set (finite diameter).
        exp_concavity: ``α > 0``.
        grad_bound: ``G > 0``.
        delta: ``ε > 0`` (overrides the default).
    """

    _state_names = ("x", "metric")

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        exp_concavity: float,
        grad_bound: float,
        delta: float | None = None,
    ) -> None:
        super().__init__(x0, domain)
        alpha = float(check_positive("exp_concavity", exp_concavity))
        g = float(check_positive("grad_bound", grad_bound))
        diam = domain.diameter
        if not math.isfinite(diam):
            raise ValueError("ONS needs a bounded domain (finite diameter)")
        self.beta = 0.5 * min(1.0 / (4.0 * g * diam), alpha)
        self.delta = float(
            check_positive("delta", 1.0 / (self.beta * diam) ** 2 if delta is None else delta)
        )
        d = self.x0.shape[-1]
        eye = torch.eye(d, dtype=self.x0.dtype, device=self.x0.device)
        self.metric = (self.delta * eye).expand(*self.x0.shape[:-1], d, d).clone()
        self.x = self.x0.clone()

    def _predict(self) -> Tensor:
        return self.x

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        self.metric = self.metric + grad.unsqueeze(-1) * grad.unsqueeze(-2)
        move = torch.linalg.solve(self.metric, grad.unsqueeze(-1)).squeeze(-1) / self.beta
        self.x = self.domain.project(self.x - move, metric=self.metric)
