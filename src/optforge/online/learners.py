r"""Online learners: optimistic online mirror descent and its baselines.

Paper: Sijia Chen, Yu-Jie Zhang, Wei-Wei Tu, Peng Zhao, Lijun Zhang, "Optimistic Online Mirror
Descent for Bridging Stochastic and Adversarial Online Convex Optimization", ICML 2023,
arXiv:2302.04552. Baselines: online gradient descent (Zinkevich 2003), follow the regularised
leader and its optimistic form (Sachs, Hadiji, van Erven, Guzmán 2022), online Newton step
(Hazan, Agarwal, Kale 2007), and an optimistic-Hedge ensemble for dynamic regret (after Zhao,
Zhang, Zhang, Zhou 2020, "Sword").

**Protocol.** A learner is an explicit two-call object::

    x_t = learner.predict()             # play x_t (applies the optimistic step)
    learner.update(grad_f_t(x_t))       # observe g_t = ∇f_t(x_t); the hint for t+1 is g_t

``update(grad, hint=M)`` overrides the next hint (e.g. a model's forecast of ∇f_{t+1}).
Every learner works on a batch of independent problems at once: ``x0`` of shape ``(*batch, d)``
gives ``*batch`` learners that share hyper-parameters but keep their own step sizes and state.

**Optimistic OMD** (regulariser ψ_t, Bregman divergence B, hint M_t, x̂_1 = x_1, M_1 = 0):

.. math::

    x_t = \arg\min_{x\in\mathcal X} \langle M_t, x\rangle + B_{\psi_t}(x, \hat x_t),\qquad
    \hat x_{t+1} = \arg\min_{x\in\mathcal X} \langle g_t, x\rangle + B_{\psi_t}(x, \hat x_t),
    \qquad M_{t+1} = g_t .

* Euclidean ψ_t = ‖x‖²/(2η_t) (:class:`OptimisticOGD`): ``x_t = Π(x̂_t − η_t M_t)``,
  ``x̂_{t+1} = Π(x̂_t − η_t g_t)``.
* Entropic ψ_t = η_t⁻¹ Σ x_i log x_i on the simplex (``OptimisticOMD(mirror="entropic")``,
  optimistic Hedge): ``x_t ∝ x̂_t e^{−η_t M_t}``, ``x̂_{t+1} ∝ x̂_t e^{−η_t g_t}``.
* ψ_t = ½‖x‖²_{U_t} (:class:`OptimisticONS`): ``U_t = δI + (β/2) Σ_{s<t} v_s v_sᵀ``,
  ``x_t = Π^{U_t}(x̂_t − U_t^{-1} M_t)``, ``x̂_{t+1} = Π^{U_t}(x̂_t − U_t^{-1} g_t)``.

**Step sizes** (η_t is fixed before x_t and uses only rounds s ≤ t−1; both steps of round t use it):

================== =========================================================================
``"adaptive"``     ``η_t = min{ D / sqrt(δ + Σ_{s<t} ‖g_s − M_s‖²_*), 1/(4L) }`` (convex + smooth;
                   ``D`` = domain diameter, or ``sqrt(ln d)`` for the entropic map with the
                   dual norm ``‖·‖_∞``; without ``smoothness`` there is no cap — a warning says so)
``"strongly_convex"`` ``η_t = 2 / (λt + 8L)`` (``2/(λt)`` without ``smoothness``)
``"fixed"``        ``η_t = lr``
================== =========================================================================

Choices where the spec marks VERIFY (our choices, documented in ``docs/methods/optimistic-omd.md``):

* the strongly convex step ``2/(λt + 8L)`` keeps η_t ≤ 1/(4L) from round 1 (the recalled
  ``2/(λt)`` only from t ≥ 8L/λ);
* optimistic ONS accumulates ``g_s g_sᵀ`` by default (``outer="grad"``, classic ONS); ``"diff"``
  accumulates ``(g_s − M_s)(g_s − M_s)ᵀ``; ``δ`` defaults to ``1 + 8L/β`` (``1`` without L);
* the ensemble's grid is ``η_i = min{2^{i−1} η_min, 1/(4L)}``, ``η_min = D/(G√(8T))``,
  ``N = ⌈½ log₂(1 + 4T)⌉ + 1``; the meta learner is optimistic Hedge over the linearised losses
  ``⟨g_t, x_{t,i}⟩`` with hints ``⟨M_t, x_{t,i}⟩`` and the adaptive entropic step above (Sword++'s
  correction terms are not included);
* the baselines :class:`OGD` and :class:`FTRL` use ``η_t = D/(G_t√t)`` with ``G_t`` the running
  max of ‖g_s‖ (or ``grad_bound``); :class:`ONS` is Hazan et al.'s original (``A_t`` includes g_t);
* a starting point outside the domain raises ``ValueError`` (it is not silently projected).

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
import warnings
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_finite, check_nonnegative, check_positive, check_positive_int
from optforge.online.domains import Domain, Simplex

__all__ = [
    "FTRL",
    "OGD",
    "ONS",
    "OnlineLearner",
    "OptimisticEnsemble",
    "OptimisticFTRL",
    "OptimisticOGD",
    "OptimisticOMD",
    "OptimisticONS",
    "ensemble_step_sizes",
]

Step = Literal["adaptive", "strongly_convex", "fixed"]
Hint = Literal["last_grad", "zero"]
Mirror = Literal["euclidean", "entropic"]


class OnlineLearner(ABC):
    """Base class: the predict/update protocol, input checks and ``state_dict``.

    Subclasses list their tensor state in ``_state_names`` and implement ``_predict`` and
    ``_update``. ``t`` counts completed rounds (the next point played is ``x_{t+1}``).
    """

    _state_names: tuple[str, ...] = ()

    def __init__(self, x0: Tensor, domain: Domain) -> None:
        if not isinstance(domain, Domain):
            raise TypeError(
                f"domain must be an optforge.online Domain, got {type(domain).__name__}"
            )
        if not isinstance(x0, Tensor):
            raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
        if x0.ndim < 1:
            raise ValueError("x0 must have at least one dimension (the last is the point's)")
        if not x0.is_floating_point():
            x0 = x0.to(torch.get_default_dtype())
        check_finite("x0", x0)
        domain.check_dim(x0.shape[-1])
        if not domain.contains(x0):
            raise ValueError(f"x0 lies outside the domain {domain!r}")
        self.domain = domain
        self.x0 = x0.detach().clone()
        self.t = 0
        self._x: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.x0.shape

    def predict(self) -> Tensor:
        """The point ``x_t`` to play this round (idempotent until :meth:`update`)."""
        if self._x is None:
            self._x = self._predict()
        return self._x

    def update(self, grad: Tensor, hint: Tensor | None = None) -> None:
        """Observe ``g_t = ∇f_t(x_t)`` (shape of ``x0``) and move to round ``t + 1``.

        Args:
            grad: the gradient at the played point ``x_t``.
            hint: the hint ``M_{t+1}`` for the next round (default: the learner's ``hint`` rule,
                the last gradient for optimistic learners). Ignored by non-optimistic learners.
        """
        grad = self._check_vector("grad", grad)
        if hint is not None:
            hint = self._check_vector("hint", hint)
        x = self.predict()
        self._update(x, grad, hint)
        self.t += 1
        self._x = None

    def state_dict(self) -> dict[str, Any]:
        """Round counter and every state tensor (cloned), for exact resumption."""
        state: dict[str, Any] = {"t": self.t}
        for name in self._state_names:
            state[name] = getattr(self, name).clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a learner with the same settings."""
        missing = [k for k in ("t", *self._state_names) if k not in state]
        if missing:
            raise ValueError(f"state_dict is missing {missing}")
        for name in self._state_names:
            current = getattr(self, name)
            value = torch.as_tensor(state[name])
            if value.shape != current.shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {tuple(value.shape)}, "
                    f"expected {tuple(current.shape)}"
                )
            setattr(self, name, value.to(current).clone())
        self.t = int(state["t"])
        self._x = None

    # -- helpers -------------------------------------------------------------------------------

    def _check_vector(self, name: str, value: Tensor) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.shape != self.x0.shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected {tuple(self.x0.shape)}"
            )
        check_finite(name, value)
        return value.detach().to(self.x0)

    @abstractmethod
    def _predict(self) -> Tensor:
        """The next decision ``x_t`` (before the loss is revealed)."""

    @abstractmethod
    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        """Absorb the gradient at ``x`` (and the optional hint for the next round)."""


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

    def step_size(self) -> Tensor | float:
        """η_t for the coming round (uses rounds ``s ≤ t − 1`` only)."""
        t = self.t + 1
        if self.step == "fixed":
            return self.lr
        if self.step == "strongly_convex":
            extra = 0.0 if self.smoothness is None else 8.0 * self.smoothness
            return 2.0 / (self.strong_convexity * t + extra)
        denom = torch.clamp(self.delta + self.variation, min=torch.finfo(self.x0.dtype).tiny).sqrt()
        eta = self.radius / denom
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
        zeros1 = torch.zeros(*self.x0.shape[:-1], 1, dtype=self.x0.dtype, device=self.x0.device)
        self.grad_sum = torch.zeros_like(self.x0)
        self.hint_vec = torch.zeros_like(self.x0)
        self.grad_max, self.variation = zeros1, zeros1.clone()

    def _eta(self) -> Tensor | float:
        if self.step == "fixed":
            return self.lr
        if self._optimistic:  # the self-confident step of optimistic OMD (A)
            denom = torch.clamp(self.delta + self.variation, min=torch.finfo(self.x0.dtype).tiny)
            eta = self.domain.diameter / denom.sqrt()
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
        smoothness: ``L``; the default ``δ`` is ``1 + 8L/β`` (``1`` without it).
        delta: ``δ > 0`` (overrides the default).
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
            delta = 1.0 if smoothness is None else 1.0 + 8.0 * smoothness / self.beta
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


def ensemble_step_sizes(
    horizon: int, diameter: float, grad_bound: float, smoothness: float | None = None
) -> list[float]:
    """The base learners' fixed steps ``η_i = min{2^{i−1}·D/(G√(8T)), 1/(4L)}``, i = 1..N,
    ``N = ⌈½ log₂(1 + 4T)⌉ + 1`` (duplicates at the cap are dropped)."""
    horizon = check_positive_int("horizon", horizon)
    check_positive("grad_bound", grad_bound)
    check_positive("diameter", diameter)
    n = math.ceil(0.5 * math.log2(1 + 4 * horizon)) + 1
    eta_min = diameter / (grad_bound * math.sqrt(8 * horizon))
    cap = math.inf if smoothness is None else 1.0 / (4.0 * check_positive("smoothness", smoothness))
    etas: list[float] = []
    for i in range(n):
        eta = min(eta_min * 2.0**i, cap)
        if not etas or eta > etas[-1]:
            etas.append(eta)
    return etas


class OptimisticEnsemble(OnlineLearner):
    """Dynamic-regret ensemble: optimistic Hedge over optimistic OGD learners with a step grid.

    Base learner ``i`` runs ``OptimisticOGD(step="fixed", lr=η_i)`` on the linearised losses
    ``⟨g_t, x⟩`` (``g_t`` taken at the combined point ``x_t``) with hint ``M_t = g_{t−1}``; the
    meta learner (``OptimisticOMD(mirror="entropic")``) weighs them with losses
    ``ℓ_{t,i} = ⟨g_t, x_{t,i}⟩`` and hints ``m_{t,i} = ⟨M_t, x_{t,i}⟩``;
    ``x_t = Σ_i p_{t,i} x_{t,i}``.
    All base learners are one batched tensor ``(*batch, N, d)``.

    Args:
        x0: starting point of every base learner, inside ``domain``.
        domain: the feasible set (finite diameter).
        horizon: ``T``, sets the step grid.
        grad_bound: ``G``.
        smoothness: ``L`` (caps the grid at ``1/(4L)``).
        step_sizes: an explicit grid instead of :func:`ensemble_step_sizes`.
        meta_delta: ``δ`` of the meta learner's adaptive step.
    """

    _state_names = ("xhat", "hint_vec")

    def __init__(
        self,
        x0: Tensor,
        domain: Domain,
        *,
        horizon: int,
        grad_bound: float,
        smoothness: float | None = None,
        step_sizes: list[float] | None = None,
        meta_delta: float = 1e-8,
    ) -> None:
        super().__init__(x0, domain)
        if step_sizes is None:
            if not math.isfinite(domain.diameter):
                raise ValueError("OptimisticEnsemble needs a bounded domain or explicit step_sizes")
            step_sizes = ensemble_step_sizes(horizon, domain.diameter, grad_bound, smoothness)
        else:
            check_positive_int("horizon", horizon)
            for eta in step_sizes:
                check_positive("step_sizes", eta)
        self.step_sizes = [float(e) for e in step_sizes]
        n = len(self.step_sizes)
        self._etas = torch.tensor(self.step_sizes, dtype=self.x0.dtype, device=self.x0.device)
        self._etas = self._etas.unsqueeze(-1)  # (N, 1)
        self.xhat = self.x0.unsqueeze(-2).expand(*self.x0.shape[:-1], n, self.x0.shape[-1]).clone()
        self.hint_vec = torch.zeros_like(self.x0)
        weights0 = torch.full(
            (*self.x0.shape[:-1], n), 1.0 / n, dtype=self.x0.dtype, device=self.x0.device
        )
        self.meta = OptimisticOMD(weights0, Simplex(n), mirror="entropic", delta=meta_delta)

    @property
    def weights(self) -> Tensor:
        """The meta learner's weights ``p_t`` over the base learners (shape ``(*batch, N)``)."""
        return self.meta.predict()

    def _base_points(self, hint: Tensor) -> Tensor:
        return self.domain.project(self.xhat - self._etas * hint.unsqueeze(-2))

    def _predict(self) -> Tensor:
        self._base = self._base_points(self.hint_vec)
        return (self.meta.predict().unsqueeze(-1) * self._base).sum(dim=-2)

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        losses = (self._base * grad.unsqueeze(-2)).sum(dim=-1)
        self.xhat = self.domain.project(self.xhat - self._etas * grad.unsqueeze(-2))
        self.hint_vec = grad if hint is None else hint
        next_base = self._base_points(self.hint_vec)
        meta_hint = (next_base * self.hint_vec.unsqueeze(-2)).sum(dim=-1)
        self.meta.update(losses, hint=meta_hint)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["meta"] = self.meta.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "meta" not in state:
            raise ValueError("state_dict is missing ['meta']")
        super().load_state_dict(state)
        self.meta.load_state_dict(state["meta"])


# -- private helpers ---------------------------------------------------------------------------


def _warn_no_smoothness(name: str) -> None:
    warnings.warn(
        f"{name}: no smoothness given, so the adaptive step is not capped at 1/(4L); early steps "
        "may be too large (pass smoothness=L)",
        UserWarning,
        stacklevel=3,
    )


def _check_step(
    step: str, lr: Any, strong_convexity: float | None, x0: Tensor
) -> tuple[str, Tensor | float | None, float | None]:
    """Validate the step-size rule; returns ``(step, lr, strong_convexity)``."""
    if step not in ("adaptive", "strongly_convex", "fixed"):
        raise ValueError(f"step must be 'adaptive', 'strongly_convex' or 'fixed', got {step!r}")
    if step == "fixed":
        if lr is None:
            raise ValueError("lr is required for step='fixed'")
        if isinstance(lr, Tensor):
            batch = x0.shape[:-1]
            if lr.shape != batch:
                raise ValueError(
                    f"lr tensor must have the batch shape {tuple(batch)}, got {tuple(lr.shape)}"
                )
            if not bool(torch.isfinite(lr).all()) or bool((lr <= 0).any()):
                raise ValueError("lr must be finite and > 0 everywhere")
            lr = lr.to(x0).unsqueeze(-1)
        else:
            lr = float(check_positive("lr", lr))
    elif lr is not None:
        raise ValueError(f"lr is only used with step='fixed', got lr={lr!r} with step={step!r}")
    if step == "strongly_convex":
        if strong_convexity is None:
            raise ValueError("strong_convexity is required for step='strongly_convex'")
        strong_convexity = float(check_positive("strong_convexity", strong_convexity))
    return step, lr, strong_convexity


def _baseline_eta(learner: OGD | FTRL, t: int) -> Tensor | float:
    """The baselines' step ``D/(G_t√t)`` (or ``1/(λt)``, or ``lr``) after ``t`` rounds."""
    if learner.step == "fixed":
        return learner.lr
    if learner.step == "strongly_convex":
        return 1.0 / (learner.strong_convexity * t)
    g = learner.grad_max if learner.grad_bound is None else learner.grad_bound
    if isinstance(g, Tensor):
        g = torch.clamp(g, min=torch.finfo(learner.x0.dtype).tiny)
    return learner.domain.diameter / (g * math.sqrt(max(t, 1)))
