"""The online-learner protocol: ``predict`` then ``update``, batched, with ``state_dict``.

A learner is an explicit two-call object::

    x_t = learner.predict()             # play x_t (applies the optimistic step)
    learner.update(grad_f_t(x_t))       # observe g_t = ∇f_t(x_t); the hint for t+1 is g_t

``update(grad, hint=M)`` overrides the next hint (e.g. a model's forecast of ∇f_{t+1}).
Every learner works on a batch of independent problems at once: ``x0`` of shape ``(*batch, d)``
gives ``*batch`` learners that share hyper-parameters but keep their own step sizes and state.
A starting point outside the domain raises ``ValueError`` (it is not silently projected).

Example::

    learner = OptimisticOGD(torch.zeros(10), Ball(1.0), smoothness=1.0)
    for c in targets:                      # f_t(x) = ½‖x − c_t‖²
        x = learner.predict()
        learner.update(x - c)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from optforge._core import check_finite, check_not_meta
from optforge.online.domains import Domain

__all__ = ["OnlineLearner"]


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
        check_not_meta("x0", x0)
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
        if value.requires_grad:
            value = value.detach()
        # one reduction in the usual case: a finite sum means finite entries; otherwise the full
        # check decides (NaN/inf raise, a finite tensor whose sum overflowed passes)
        if not value.is_floating_point() or not math.isfinite(float(value.sum())):
            check_finite(name, value)
        if value.dtype != self.x0.dtype or value.device != self.x0.device:
            value = value.to(self.x0)
        return value

    @abstractmethod
    def _predict(self) -> Tensor:
        """The next decision ``x_t`` (before the loss is revealed)."""

    @abstractmethod
    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        """Absorb the gradient at ``x`` (and the optional hint for the next round)."""
