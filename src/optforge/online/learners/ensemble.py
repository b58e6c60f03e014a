"""A dynamic-regret ensemble: optimistic Hedge over optimistic OGD learners on a step grid.

After Zhao, Zhang, Zhang, Zhou 2020 ("Sword"), as used by Chen et al., ICML 2023,
arXiv:2302.04552. Base learner ``i`` runs optimistic OGD with the fixed step ``η_i`` on the
linearised losses; the meta learner is optimistic Hedge over them.

Choices: the grid is ``η_i = min{2^{i−1} η_min, 1/(4L)}``, ``η_min = D/(G√(8T))``,
``N = ⌈½ log₂(1 + 4T)⌉ + 1``; the meta learner is optimistic Hedge over the linearised losses
``⟨g_t, x_{t,i}⟩`` with hints ``⟨M_t, x_{t,i}⟩`` and the adaptive entropic step of
:class:`~optforge.online.OptimisticOMD` (Sword++'s correction terms are not included).

**Meta step: δ = (GD)².** The meta learner's step is
``η_t = √(ln N)/√(δ + Σ_{s<t} a_s)`` with ``a_s = ‖ℓ_s − m_s‖²_∞``. Optimistic Hedge with
non-increasing steps has regret ``≤ ln N/η_T + Σ_t η_t a_t`` against any base learner. The
second sum is ``√(ln N)·Σ_t a_t/√(δ + Σ_{s<t} a_s)``. When ``δ ≥ max_t a_t``, each
denominator is at least ``√(Σ_{s≤t} a_s)``, so the sum is ``≤ 2√(ln N·Σ_t a_t)`` and the
meta regret is ``O(√(ln N)·(√δ + √(Σ_t a_t)))``. When ``δ → 0`` the first term alone is
``a_1·√(ln N)/√δ``, which is unbounded. The first step ``η_1 = √(ln N)/√δ`` is then huge (1.4·10⁴
for N = 8, δ = 10⁻⁸), so the weights jump onto the base learner that was best in round 1.
How large can ``a_t`` be? Here ``ℓ_{t,i} − m_{t,i} = ⟨g_t − M_t, x_{t,i}⟩``, so
``a_t ≤ ‖g_t − M_t‖²·max_i‖x_{t,i}‖² ≤ (2G)²·(D/2)² = (GD)²`` on a domain centred at the
origin (a centred ball: ``‖x‖ ≤ D/2``). The default ``δ = (GD)²`` is therefore the smallest δ
with the clean bound. Equivalently, it caps the meta step at ``η_t ≤ √(ln N)/(GD)``, Hedge's
one-round step for losses of range GD. For a domain not centred at the origin, pass
``meta_delta = (2G·max_{x∈𝒳}‖x‖)²``. An unbounded domain needs an explicit ``meta_delta``.

Example::

    learner = OptimisticEnsemble(torch.zeros(10), Ball(1.0), horizon=10_000, grad_bound=2.0)
    x = learner.predict()
    learner.update(grad_at(x))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optforge._core import check_positive, check_positive_int
from optforge.online.domains import Domain, Simplex
from optforge.online.learners.base import OnlineLearner
from optforge.online.learners.omd import OptimisticOMD

__all__ = ["OptimisticEnsemble", "ensemble_step_sizes"]


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
        meta_delta: ``δ`` of the meta learner's adaptive step; default ``(G·D)²`` (module doc).
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
        meta_delta: float | None = None,
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
        if meta_delta is None:
            if not math.isfinite(domain.diameter):
                raise ValueError("OptimisticEnsemble on an unbounded domain needs meta_delta")
            meta_delta = (float(check_positive("grad_bound", grad_bound)) * domain.diameter) ** 2
        self.meta_delta = float(check_positive("meta_delta", meta_delta))
        self.meta = OptimisticOMD(weights0, Simplex(n), mirror="entropic", delta=self.meta_delta)
        self._next_base: Tensor | None = None

    @property
    def weights(self) -> Tensor:
        """The meta learner's weights ``p_t`` over the base learners (shape ``(*batch, N)``)."""
        return self.meta.predict()

    def _base_points(self, hint: Tensor) -> Tensor:
        return self.domain.project(self.xhat - self._etas * hint.unsqueeze(-2))

    def _predict(self) -> Tensor:
        # the base points for this round's hint were already computed by the last update
        base, self._next_base = self._next_base, None
        self._base = self._base_points(self.hint_vec) if base is None else base
        return (self.meta.predict().unsqueeze(-1) * self._base).sum(dim=-2)

    def _update(self, x: Tensor, grad: Tensor, hint: Tensor | None) -> None:
        losses = (self._base * grad.unsqueeze(-2)).sum(dim=-1)
        self.xhat = self.domain.project(self.xhat - self._etas * grad.unsqueeze(-2))
        self.hint_vec = grad if hint is None else hint
        next_base = self._base_points(self.hint_vec)
        meta_hint = (next_base * self.hint_vec.unsqueeze(-2)).sum(dim=-1)
        self.meta.update(losses, hint=meta_hint)
        self._next_base = next_base

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["meta"] = self.meta.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "meta" not in state:
            raise ValueError("state_dict is missing ['meta']")
        super().load_state_dict(state)
        self.meta.load_state_dict(state["meta"])
        self._next_base = None
