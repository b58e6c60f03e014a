r"""Loss streams of the stochastically extended adversarial (SEA) model, and regret bookkeeping.

In the SEA model (Sachs et al. 2022; Chen et al. 2023, arXiv:2302.04552) an adversary picks a
distribution 𝒟_t each round and the loss f_t ~ 𝒟_t is drawn from it. Regret bounds depend on the
cumulative stochastic variance and the cumulative adversarial variation

.. math::

    \sigma^2_{1:T} = \mathbb E\sum_t \max_x \mathbb E\|\nabla f_t(x) - \nabla F_t(x)\|^2,\qquad
    \Sigma^2_{1:T} = \mathbb E\sum_t \sup_x \|\nabla F_t(x) - \nabla F_{t-1}(x)\|^2,\
    F_0 \equiv 0,

with ``F_t = E f_t``. Two stream families, each pre-drawn as tensors (the whole stream is one
vectorised draw from a dedicated ``torch.Generator``):

* :func:`sea_stream`: quadratics ``f_t(x) = ½‖x − c_t‖²``, ``c_t = μ_t + σ ξ_t/√d``,
  ``ξ_t ~ N(0, I)``; so σ²_t = σ² and Σ²_t = ‖μ_t − μ_{t−1}‖² exactly;
* :func:`sea_least_squares`: ``f_t(x) = ½(a_tᵀx − b_t)²`` with ``a_t`` uniform on the unit sphere
  and ``b_t = clip(⟨w_t, a_t⟩ + σ ε_t, −1, 1)`` (exp-concave on the unit ball with α = 1/4, G = 2).

The adversarial part (μ_t or w_t) is one of

=================  ========================================================================
``"stochastic"``   fixed: ``amplitude·𝟙/√d`` (Σ²_{1:T} = O(1))
``"drift"``        ``amplitude·(cos 2πt/P, sin 2πt/P, 0, …)``, ``P = period`` (default 2000)
``"switch"``       ``±amplitude·e₁``, sign flips every ``period`` rounds (default 500)
``"alternating"``  ``amplitude·(−1)^t e₁`` (maximal Σ² ≈ 4·amplitude²·T); alias ``"adversarial"``
=================  ========================================================================

Streams are batchable: :meth:`QuadraticStream.stack` stacks several streams into one with a
batch dimension, matching a learner started from ``x0`` of shape ``(B, d)``.
:func:`run_online` plays a learner against a stream and returns static regret against the exact
comparator (``argmin_{x∈𝒳} Σ_t f_t(x)``), the regret curve over prefixes, and dynamic regret
against the per-round minimisers of ``F_t`` for quadratic streams.

Example::

    stream = sea_stream("switch", dim=10, horizon=10_000, sigma=0.3, seed=0)
    result = run_online(OptimisticOGD(torch.zeros(10, dtype=torch.float64), Ball(1.0),
                                      smoothness=1.0), stream)
    result["static_regret"], result["cumulative_loss"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive_int, check_tensor, make_generator
from optforge.online.domains import Ball, Box, Domain
from optforge.online.learners import OnlineLearner

__all__ = [
    "SEA_KINDS",
    "LeastSquaresStream",
    "QuadraticStream",
    "online_regret",
    "play_online",
    "run_online",
    "sea_least_squares",
    "sea_means",
    "sea_stream",
]

Kind = Literal["stochastic", "drift", "switch", "alternating", "adversarial"]
SEA_KINDS: tuple[str, ...] = ("stochastic", "drift", "switch", "alternating", "adversarial")
_DEFAULT_PERIOD = {"drift": 2000, "switch": 500}


def sea_means(
    kind: Kind,
    *,
    dim: int,
    horizon: int,
    amplitude: float = 0.8,
    period: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The adversarial part ``μ_t``, t = 1..T, of a SEA stream, shape ``(T, dim)``."""
    if kind not in SEA_KINDS:
        raise ValueError(f"kind must be one of {SEA_KINDS}, got {kind!r}")
    dim = check_positive_int("dim", dim)
    horizon = check_positive_int("horizon", horizon)
    check_nonnegative("amplitude", amplitude)
    if period is None:
        period = _DEFAULT_PERIOD.get(kind, 1)
    period = check_positive_int("period", period)
    t = torch.arange(1, horizon + 1, dtype=dtype, device=device)
    means = torch.zeros(horizon, dim, dtype=dtype, device=device)
    if kind == "stochastic":
        means += amplitude / math.sqrt(dim)
    elif kind == "drift":
        if dim < 2:
            raise ValueError("kind='drift' needs dim >= 2")
        means[:, 0] = amplitude * torch.cos(2 * math.pi * t / period)
        means[:, 1] = amplitude * torch.sin(2 * math.pi * t / period)
    elif kind == "switch":
        sign = 1.0 - 2.0 * ((torch.arange(horizon, device=device) // period) % 2).to(dtype)
        means[:, 0] = amplitude * sign
    else:  # alternating / adversarial
        means[:, 0] = amplitude * (-1.0) ** t
    return means


class QuadraticStream:
    """The losses ``f_t(x) = ½‖x − c_t‖²``, t = 1..T (indices ``0..T−1`` in the methods).

    Args:
        centers: ``c_t``, shape ``(T, *batch, d)``.
        domain: the feasible set (the comparator is ``domain.project(mean_t c_t)``, exact for any
            domain with an exact Euclidean projection).
        means: ``μ_t = E c_t`` (same shape), for dynamic regret and Σ²; default ``centers``.
        sigma: the noise level ``σ`` (``E‖c_t − μ_t‖² = σ²``), float or tensor of shape ``batch``.
    """

    def __init__(
        self,
        centers: Tensor,
        domain: Domain,
        *,
        means: Tensor | None = None,
        sigma: float | Tensor = 0.0,
    ) -> None:
        check_tensor("centers", centers, allow_half=False)
        if centers.ndim < 2:
            raise ValueError("centers must have shape (T, *batch, d)")
        domain.check_dim(centers.shape[-1])
        self.centers = centers
        self.means = centers if means is None else means
        check_tensor("means", self.means, device=centers.device, owner="centers")
        if self.means.shape != centers.shape:
            raise ValueError("means must have the shape of centers")
        self.domain = domain
        self.sigma = torch.as_tensor(sigma, dtype=centers.dtype, device=centers.device)
        if not bool(torch.isfinite(self.sigma).all()) or bool((self.sigma < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")

    @property
    def horizon(self) -> int:
        return self.centers.shape[0]

    @classmethod
    def stack(cls, streams: Sequence[QuadraticStream]) -> QuadraticStream:
        """One stream with a batch dimension (dim 1) from streams of equal horizon and domain."""
        if not streams:
            raise ValueError("streams must not be empty")
        sig = torch.stack([torch.broadcast_to(s.sigma, s.centers.shape[1:-1]) for s in streams])
        return cls(
            torch.stack([s.centers for s in streams], dim=1),
            streams[0].domain,
            means=torch.stack([s.means for s in streams], dim=1),
            sigma=sig,
        )

    def loss(self, t: int, x: Tensor) -> Tensor:
        """``f_t(x)`` for round index ``t`` (0-based), shape ``batch``."""
        return 0.5 * ((x - self.centers[t]) ** 2).sum(dim=-1)

    def grad(self, t: int, x: Tensor) -> Tensor:
        """``∇f_t(x) = x − c_t``."""
        return x - self.centers[t]

    def _loss_and_grad(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_t(x), ∇f_t(x))`` from one difference (the values of :meth:`loss`, :meth:`grad`)."""
        diff = x - self.centers[t]
        return 0.5 * (diff**2).sum(dim=-1), diff

    def comparator(self, horizon: int | None = None) -> Tensor:
        """``argmin_{x∈𝒳} Σ_{t≤T} f_t(x) = Π(mean c_t)``, shape ``(*batch, d)``."""
        horizon = self.horizon if horizon is None else horizon
        return self.domain.project(self.centers[:horizon].mean(dim=0))

    def prefix_comparator_losses(self, checkpoints: Sequence[int]) -> Tensor:
        """``min_x Σ_{t≤T_k} f_t(x)`` for every checkpoint ``T_k``, shape ``(K, *batch)``.

        The comparator is ``Π(c̄)`` (prefix means by a cumulative sum); its loss is summed
        directly (no cancellation-prone closed form).
        """
        csum = self.centers.cumsum(dim=0)
        out = []
        for horizon in checkpoints:
            u = self.domain.project(csum[horizon - 1] / horizon)
            out.append(0.5 * ((self.centers[:horizon] - u) ** 2).sum(dim=-1).sum(dim=0))
        return torch.stack(out)

    def minimizers(self) -> Tensor:
        """The per-round minimisers ``u_t = Π(μ_t)`` of ``F_t`` (the dynamic comparator)."""
        return self.domain.project(self.means)

    def sigma2(self) -> Tensor:
        """``σ²_{1:T} = Tσ²`` (exact for this noise model)."""
        return self.horizon * self.sigma**2 * torch.ones(self.centers.shape[1:-1]).to(self.sigma)

    def Sigma2(self) -> Tensor:
        """``Σ²_{1:T} = sup_x‖x − μ_1‖² + Σ_{t≥2} ‖μ_t − μ_{t−1}‖²`` (F_0 ≡ 0)."""
        first = _sup_sq_distance(self.domain, self.means[0])
        rest = ((self.means[1:] - self.means[:-1]) ** 2).sum(dim=-1).sum(dim=0)
        return first + rest


class LeastSquaresStream:
    """The losses ``f_t(x) = ½(a_tᵀx − b_t)²`` (online least squares; exp-concave on a ball).

    Args:
        features: ``a_t``, shape ``(T, *batch, d)``.
        targets: ``b_t``, shape ``(T, *batch)``.
        domain: the feasible set (the comparator is a ``metric`` projection: Ball or Box).
    """

    def __init__(self, features: Tensor, targets: Tensor, domain: Domain) -> None:
        if features.shape[:-1] != targets.shape:
            raise ValueError("targets must have shape features.shape[:-1]")
        domain.check_dim(features.shape[-1])
        self.features, self.targets, self.domain = features, targets, domain

    @property
    def horizon(self) -> int:
        return self.features.shape[0]

    def loss(self, t: int, x: Tensor) -> Tensor:
        return 0.5 * ((self.features[t] * x).sum(dim=-1) - self.targets[t]) ** 2

    def grad(self, t: int, x: Tensor) -> Tensor:
        residual = (self.features[t] * x).sum(dim=-1, keepdim=True) - self.targets[t].unsqueeze(-1)
        return residual * self.features[t]

    def _loss_and_grad(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_t(x), ∇f_t(x))`` from one residual (the values of :meth:`loss`, :meth:`grad`)."""
        a = self.features[t]
        residual = (a * x).sum(dim=-1, keepdim=True) - self.targets[t].unsqueeze(-1)
        return 0.5 * residual.squeeze(-1) ** 2, residual * a

    @classmethod
    def stack(cls, streams: Sequence[LeastSquaresStream]) -> LeastSquaresStream:
        """One stream with a batch dimension (dim 1) from streams of equal horizon and domain."""
        if not streams:
            raise ValueError("streams must not be empty")
        return cls(
            torch.stack([s.features for s in streams], dim=1),
            torch.stack([s.targets for s in streams], dim=1),
            streams[0].domain,
        )

    def prefix_comparator_losses(self, checkpoints: Sequence[int]) -> Tensor:
        """``min_{x∈𝒳} Σ_{t≤T_k} f_t(x)``: ``Π^H(H^{-1}h)`` with ``H = AᵀA``, ``h = Aᵀb``."""
        a, b = self.features, self.targets
        outer = (a.unsqueeze(-1) * a.unsqueeze(-2)).cumsum(dim=0)
        lin = (a * b.unsqueeze(-1)).cumsum(dim=0)
        sq = (b**2).cumsum(dim=0)
        out = []
        for horizon in checkpoints:
            h_mat, h_vec = outer[horizon - 1], lin[horizon - 1]
            eye = torch.eye(h_mat.shape[-1], dtype=h_mat.dtype, device=h_mat.device)
            h_mat = h_mat + 1e-12 * eye
            free = torch.linalg.solve(h_mat, h_vec.unsqueeze(-1)).squeeze(-1)
            u = self.domain.project(free, metric=h_mat)
            quad = (u * (h_mat @ u.unsqueeze(-1)).squeeze(-1)).sum(-1)
            out.append(0.5 * quad - (h_vec * u).sum(-1) + 0.5 * sq[horizon - 1])
        return torch.stack(out)


def sea_stream(
    kind: Kind,
    *,
    dim: int = 10,
    horizon: int = 10_000,
    sigma: float = 0.0,
    amplitude: float | None = None,
    period: int | None = None,
    radius: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> QuadraticStream:
    """A SEA quadratic stream on the ball of ``radius``.

    Args:
        kind: ``"stochastic"``, ``"drift"``, ``"switch"``, ``"alternating"`` (``"adversarial"``).
        dim: dimension ``d``.
        horizon: number of rounds ``T``.
        sigma: noise level σ ≥ 0 (``c_t = μ_t + σξ_t/√d``).
        amplitude: size of μ_t (default 0.5 for ``"stochastic"``, 0.8 otherwise).
        period: drift period / switching interval (defaults 2000 / 500).
        radius: the ball's radius.
        seed: seed of the dedicated generator for ξ_t.
    """
    check_nonnegative("sigma", sigma)
    if amplitude is None:
        amplitude = 0.5 if kind == "stochastic" else 0.8
    means = sea_means(
        kind,
        dim=dim,
        horizon=horizon,
        amplitude=amplitude,
        period=period,
        dtype=dtype,
        device=device,
    )
    gen = make_generator(seed, device)
    noise = torch.randn(horizon, dim, generator=gen, dtype=dtype, device=device)
    centers = means + (sigma / math.sqrt(dim)) * noise
    return QuadraticStream(centers, Ball(radius), means=means, sigma=float(sigma))


def sea_least_squares(
    kind: Kind,
    *,
    dim: int = 5,
    horizon: int = 5000,
    sigma: float = 0.0,
    amplitude: float = 0.8,
    period: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> LeastSquaresStream:
    """Online least squares on the unit ball with a SEA teacher ``w_t`` (see the module doc)."""
    check_nonnegative("sigma", sigma)
    teacher = sea_means(
        kind,
        dim=dim,
        horizon=horizon,
        amplitude=amplitude,
        period=period,
        dtype=dtype,
        device=device,
    )
    gen = make_generator(seed, device)
    a = torch.randn(horizon, dim, generator=gen, dtype=dtype, device=device)
    a = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    eps = torch.randn(horizon, generator=gen, dtype=dtype, device=device)
    b = torch.clamp((a * teacher).sum(-1) + sigma * eps, -1.0, 1.0)
    return LeastSquaresStream(a, b, Ball(1.0))


def run_online(
    learner: OnlineLearner,
    stream: QuadraticStream | LeastSquaresStream,
    *,
    checkpoints: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Play ``learner`` against ``stream`` for ``stream.horizon`` rounds.

    The same as :func:`play_online` followed by :func:`online_regret`.

    Args:
        learner: a fresh learner whose ``x0`` has the stream's ``(*batch, d)`` shape.
        stream: the losses.
        checkpoints: prefix lengths for the regret curve (default: 20 evenly spaced, ending at T).

    Returns:
        A dict of tensors of shape ``batch`` (curves ``(K, *batch)``): ``cumulative_loss``,
        ``comparator_loss``, ``static_regret``, ``checkpoints`` (list), ``regret_curve``,
        ``losses`` (``(T, *batch)``), and for quadratic streams ``dynamic_regret`` (against
        ``u_t = Π(μ_t)``), ``path_length``, ``sigma2`` and ``Sigma2``.
    """
    checkpoints = _check_checkpoints(stream.horizon, checkpoints)
    return online_regret(stream, play_online(learner, stream), checkpoints=checkpoints)


def play_online(learner: OnlineLearner, stream: QuadraticStream | LeastSquaresStream) -> Tensor:
    """Play ``learner`` against ``stream`` for ``stream.horizon`` rounds; the losses ``f_t(x_t)``.

    A learner started from ``x0`` of shape ``(*batch, d)`` plays a stream of the same batch
    shape, e.g. the :meth:`QuadraticStream.stack` of independent streams (one per seed): each
    batch entry's losses are those of its stream played alone.

    Returns:
        The losses, shape ``(T, *batch)``.
    """
    loss_and_grad = _round_fn(stream)
    rounds = []
    for t in range(stream.horizon):
        x = learner.predict()
        loss, grad = loss_and_grad(t, x)
        rounds.append(loss)
        learner.update(grad)
    if not rounds:
        return torch.empty(0, *learner.shape[:-1], dtype=learner.x0.dtype, device=learner.x0.device)
    return torch.stack(rounds).to(learner.x0)


def _round_fn(stream: Any) -> Any:
    """``(t, x) → (f_t(x), ∇f_t(x))`` for the play loop: the values of ``stream.loss`` and
    ``stream.grad`` with the per-round rows sliced once."""
    if isinstance(stream, QuadraticStream):
        rows = stream.centers.unbind(0)

        def quadratic(t: int, x: Tensor) -> tuple[Tensor, Tensor]:
            diff = x - rows[t]
            return 0.5 * diff.pow(2).sum(dim=-1), diff

        return quadratic
    if isinstance(stream, LeastSquaresStream):
        features, targets = stream.features.unbind(0), stream.targets.unsqueeze(-1).unbind(0)

        def least_squares(t: int, x: Tensor) -> tuple[Tensor, Tensor]:
            a = features[t]
            residual = (a * x).sum(dim=-1, keepdim=True) - targets[t]
            return 0.5 * residual.squeeze(-1).pow(2), residual * a

        return least_squares
    return lambda t, x: (stream.loss(t, x), stream.grad(t, x))


def online_regret(
    stream: QuadraticStream | LeastSquaresStream,
    losses: Tensor,
    *,
    checkpoints: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Regret bookkeeping of the losses ``f_t(x_t)`` (shape ``(T, *batch)``) a learner paid on
    ``stream``: the dict of :func:`run_online` (static regret against the exact comparator, the
    regret curve at ``checkpoints``, and for quadratic streams the dynamic regret)."""
    horizon = stream.horizon
    checkpoints = _check_checkpoints(horizon, checkpoints)
    batch = (stream.centers if isinstance(stream, QuadraticStream) else stream.features).shape
    if not isinstance(losses, Tensor) or losses.shape != (horizon, *batch[1:-1]):
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"losses must have shape {(horizon, *batch[1:-1])}, got {got}")
    cum = losses.cumsum(dim=0)
    prefix_best = stream.prefix_comparator_losses(checkpoints)
    index = torch.tensor([c - 1 for c in checkpoints], device=cum.device)
    regret_curve = cum[index] - prefix_best
    result: dict[str, Any] = {
        "losses": losses,
        "cumulative_loss": cum[-1],
        "checkpoints": checkpoints,
        "regret_curve": regret_curve,
    }
    if checkpoints[-1] == horizon:  # the same computation as the line below
        comparator_loss = prefix_best[-1]
    else:
        comparator_loss = stream.prefix_comparator_losses([horizon])[0]
    result["comparator_loss"] = comparator_loss
    result["static_regret"] = cum[-1] - comparator_loss
    if isinstance(stream, QuadraticStream):
        u = stream.minimizers()
        dyn = 0.5 * ((u - stream.centers) ** 2).sum(dim=-1).sum(dim=0)
        result["dynamic_regret"] = cum[-1] - dyn
        result["path_length"] = torch.linalg.vector_norm(u[1:] - u[:-1], dim=-1).sum(dim=0)
        result["sigma2"] = stream.sigma2()
        result["Sigma2"] = stream.Sigma2()
    return result


def _check_checkpoints(horizon: int, checkpoints: Sequence[int] | None) -> list[int]:
    if checkpoints is None:
        checkpoints = sorted({max(1, round(horizon * k / 20)) for k in range(1, 21)})
    checkpoints = [int(c) for c in checkpoints]
    if any(c < 1 or c > horizon for c in checkpoints):
        raise ValueError(f"checkpoints must lie in [1, {horizon}]")
    return checkpoints


def _sup_sq_distance(domain: Domain, point: Tensor) -> Tensor:
    """``sup_{x∈𝒳} ‖x − point‖²`` for a ball or a box (``inf`` otherwise)."""
    if isinstance(domain, Ball):
        center = 0.0 if domain.center is None else domain.center.to(point)
        return (torch.linalg.vector_norm(point - center, dim=-1) + domain.radius) ** 2
    if isinstance(domain, Box):
        lo, hi = domain.lower.to(point), domain.upper.to(point)
        return (torch.maximum((point - lo).abs(), (point - hi).abs()) ** 2).sum(dim=-1)
    return torch.full(point.shape[:-1], math.inf, dtype=point.dtype, device=point.device)
