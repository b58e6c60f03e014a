r"""Convex feasible sets for online learning, with exact Euclidean and Mahalanobis projections.

Every domain acts on the **last** dimension of a tensor, so a batch of ``B`` independent points
``(B, d)`` is projected in one call (the learners in :mod:`optforge.online.learners` run many
independent streams at once this way).

* ``project(y)`` is the Euclidean projection :math:`\Pi_\mathcal X(y) = \arg\min_{x\in\mathcal X}
  \|x-y\|_2`;
* ``project(y, metric=U)`` (``U`` symmetric positive definite, shape ``(..., d, d)``) is the
  generalised projection :math:`\Pi^U_\mathcal X(y) = \arg\min_{x\in\mathcal X}(x-y)^\top U(x-y)`
  used by online Newton step.

=================  ==============================  =======================================
domain             Euclidean projection             ``metric=U`` projection
=================  ==============================  =======================================
:class:`Unconstrained`  identity                    identity
:class:`Ball`      radial rescaling                 ``(U+μI)^{-1}U y``, μ ≥ 0 by a safeguarded
                                                    Newton iteration on ``1/‖x(μ)‖ = 1/R``
                                                    (Moré–Sorensen secular equation) after an
                                                    eigendecomposition of ``U``
:class:`Box`       ``clamp``                        bounded least squares
                                                    (``scipy.optimize.lsq_linear``, BVLS)
:class:`Simplex`   sort-based (Duchi et al. 2008)   not provided (``NotImplementedError``)
=================  ==============================  =======================================

Example::

    ball = Ball(radius=1.0)
    x = ball.project(torch.tensor([3.0, 4.0]))      # tensor([0.6, 0.8])
    ball.contains(x)                                # True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from optforge._core import check_finite, check_positive, check_positive_int

__all__ = ["Ball", "Box", "Domain", "Simplex", "Unconstrained"]


class Domain(ABC):
    """A closed convex set acting on the last dimension of its inputs.

    Attributes:
        diameter: ``sup_{x, y ∈ X} ‖x − y‖₂`` (``inf`` when unbounded).
    """

    diameter: float = math.inf

    @abstractmethod
    def project(self, y: Tensor, metric: Tensor | None = None) -> Tensor:
        """The projection of ``y`` (shape ``(..., d)``) onto the set, in the ``metric`` norm."""

    @abstractmethod
    def contains(self, x: Tensor, atol: float = 1e-6) -> bool:
        """Whether every point of ``x`` (shape ``(..., d)``) lies in the set up to ``atol``."""

    def check_dim(self, d: int) -> None:
        """Raise ``ValueError`` if the set does not live in dimension ``d``."""
        return  # the default set (e.g. ``Unconstrained``) lives in every dimension

    def _check_metric(self, y: Tensor, metric: Tensor) -> None:
        d = y.shape[-1]
        if metric.shape[-2:] != (d, d):
            raise ValueError(f"metric must have shape (..., {d}, {d}), got {tuple(metric.shape)}")


class Unconstrained(Domain):
    """The whole space ``R^d`` (every projection is the identity)."""

    def project(self, y: Tensor, metric: Tensor | None = None) -> Tensor:
        return y

    def contains(self, x: Tensor, atol: float = 1e-6) -> bool:
        return bool(torch.isfinite(x).all())

    def __repr__(self) -> str:
        return "Unconstrained()"


class Ball(Domain):
    """The Euclidean ball ``{x : ‖x − center‖₂ ≤ radius}``.

    Args:
        radius: the radius ``R > 0``.
        center: the centre (default: the origin); a tensor of shape ``(d,)``.
    """

    def __init__(self, radius: float = 1.0, center: Tensor | None = None) -> None:
        self.radius = float(check_positive("radius", radius))
        if center is not None:
            center = torch.as_tensor(center)
            if center.ndim != 1:
                raise ValueError(f"center must be 1-D, got shape {tuple(center.shape)}")
            check_finite("center", center)
        self.center = center
        self.diameter = 2.0 * self.radius
        self._slacks: dict[torch.dtype, float] = {}

    def check_dim(self, d: int) -> None:
        if self.center is not None and self.center.shape[0] != d:
            raise ValueError(f"Ball center has dimension {self.center.shape[0]}, points have {d}")

    def _c(self, y: Tensor) -> Tensor | float:
        return 0.0 if self.center is None else self.center.to(y)

    def _slack(self, dtype: torch.dtype) -> float:
        """``R(1 + 4ε)``: points this close to the sphere are already projected."""
        slack = self._slacks.get(dtype)
        if slack is None:
            slack = self._slacks[dtype] = self.radius * (1.0 + 4.0 * torch.finfo(dtype).eps)
        return slack

    def project(self, y: Tensor, metric: Tensor | None = None) -> Tensor:
        if metric is None and self.center is None and y.is_floating_point():
            # the centred case below with c = 0 (``y − 0`` is ``y``; ``0 + w`` maps −0 to +0),
            # without its per-call overhead: learners project every round
            norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            scale = torch.where(norm > self._slack(y.dtype), norm.reciprocal() * self.radius, 1.0)
            return (y * scale).add(0.0)
        c = self._c(y)
        z = y - c
        norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        if metric is None:
            # points within a few ulps of the sphere (e.g. already projected) are left unchanged,
            # which makes the projection exactly idempotent
            slack = self._slack(y.dtype)
            scale = torch.where(norm > slack, self.radius / norm, torch.ones_like(norm))
            return c + z * scale
        self._check_metric(y, metric)
        outside = norm.squeeze(-1) > self.radius
        if not bool(outside.any()):
            return y
        x = _metric_ball_projection(z, metric, self.radius)
        return c + torch.where(outside.unsqueeze(-1), x, z)

    def contains(self, x: Tensor, atol: float = 1e-6) -> bool:
        norm = torch.linalg.vector_norm(x - self._c(x), dim=-1)
        return bool((norm <= self.radius * (1 + atol) + atol).all())

    def __repr__(self) -> str:
        return f"Ball(radius={self.radius})"


class Box(Domain):
    """The box ``{x : lower ≤ x ≤ upper}`` (bounds are floats or tensors of shape ``(d,)``).

    Args:
        lower: the lower bound(s).
        upper: the upper bound(s); must be ``≥ lower`` everywhere.
    """

    def __init__(self, lower: float | Tensor = -1.0, upper: float | Tensor = 1.0) -> None:
        lo, hi = (
            torch.as_tensor(lower, dtype=torch.float64),
            torch.as_tensor(upper, dtype=torch.float64),
        )
        check_finite("lower", lo)
        check_finite("upper", hi)
        if lo.ndim > 1 or hi.ndim > 1:
            raise ValueError("lower and upper must be numbers or 1-D tensors")
        if bool((hi < lo).any()):
            raise ValueError("upper must be >= lower everywhere")
        self.lower, self.upper = lo, hi
        width = torch.broadcast_to(hi - lo, torch.broadcast_shapes(lo.shape, hi.shape))
        self._dim = None if width.ndim == 0 else int(width.shape[0])
        self.diameter = float(torch.linalg.vector_norm(width)) if width.ndim else math.nan

    def check_dim(self, d: int) -> None:
        if self._dim is not None and self._dim != d:
            raise ValueError(f"Box bounds have dimension {self._dim}, points have {d}")
        if self._dim is None:
            self.diameter = float((self.upper - self.lower) * math.sqrt(d))

    def project(self, y: Tensor, metric: Tensor | None = None) -> Tensor:
        lo, hi = self.lower.to(y), self.upper.to(y)
        if metric is None:
            return torch.clamp(y, lo, hi)
        self._check_metric(y, metric)
        inside = ((y >= lo) & (y <= hi)).all(dim=-1)
        if bool(inside.all()):
            return y
        return _metric_box_projection(y, metric, lo, hi)

    def contains(self, x: Tensor, atol: float = 1e-6) -> bool:
        lo, hi = self.lower.to(x), self.upper.to(x)
        return bool(((x >= lo - atol) & (x <= hi + atol)).all())

    def __repr__(self) -> str:
        return f"Box(lower={self.lower.tolist()}, upper={self.upper.tolist()})"


class Simplex(Domain):
    """The probability simplex ``{x ≥ 0 : Σ x_i = 1}`` in dimension ``dim``.

    The natural home of the entropic mirror map (multiplicative weights / Hedge).
    """

    def __init__(self, dim: int) -> None:
        self.dim = check_positive_int("dim", dim)
        self.diameter = math.sqrt(2.0) if dim > 1 else 0.0

    def check_dim(self, d: int) -> None:
        if d != self.dim:
            raise ValueError(f"Simplex has dimension {self.dim}, points have {d}")

    def project(self, y: Tensor, metric: Tensor | None = None) -> Tensor:
        if metric is not None:
            raise NotImplementedError("the Mahalanobis projection onto the simplex is not provided")
        # Duchi, Shalev-Shwartz, Singer, Chandra (2008), Fig. 1: sort, find the threshold.
        u, _ = torch.sort(y, dim=-1, descending=True)
        css = torch.cumsum(u, dim=-1) - 1.0
        k = torch.arange(1, y.shape[-1] + 1, device=y.device, dtype=y.dtype)
        rho = ((u - css / k) > 0).sum(dim=-1, keepdim=True)
        theta = torch.gather(css, -1, rho - 1) / rho.to(y.dtype)
        return torch.clamp(y - theta, min=0.0)

    def contains(self, x: Tensor, atol: float = 1e-6) -> bool:
        ok_sign = bool((x >= -atol).all())
        return ok_sign and bool(((x.sum(dim=-1) - 1.0).abs() <= atol * x.shape[-1]).all())

    def __repr__(self) -> str:
        return f"Simplex(dim={self.dim})"


def _metric_ball_projection(y: Tensor, metric: Tensor, radius: float) -> Tensor:
    """``argmin_{‖x‖ ≤ R} (x−y)ᵀU(x−y)`` for ``‖y‖ > R``: ``x(μ) = (U+μI)^{-1}Uy``, ``‖x(μ)‖ = R``.

    With ``U = QΛQᵀ`` and ``w = ΛQᵀy``, ``‖x(μ)‖² = Σ w_i²/(λ_i+μ)²`` decreases in μ and
    ``φ(μ) = 1/‖x(μ)‖ − 1/R`` is concave and increasing, so Newton's method from ``μ = 0``
    (where ``φ < 0``) increases monotonically to the root (Moré & Sorensen 1983).
    """
    work = torch.float64
    y64 = y.to(work)
    u64 = torch.broadcast_to(metric.to(work), (*y.shape[:-1], y.shape[-1], y.shape[-1]))
    u64 = 0.5 * (u64 + u64.transpose(-1, -2))
    lam, q = torch.linalg.eigh(u64)
    if bool((lam <= 0).any()):
        raise ValueError("metric must be positive definite")
    w = lam * (q.transpose(-1, -2) @ y64.unsqueeze(-1)).squeeze(-1)
    mu = torch.zeros(*y.shape[:-1], 1, dtype=work, device=y.device)
    for _ in range(100):
        denom = lam + mu
        sq = (w**2 / denom**2).sum(dim=-1, keepdim=True)
        norm = sq.sqrt()
        phi = 1.0 / norm - 1.0 / radius
        if bool((phi.abs() <= 1e-14 / radius).all()):
            break
        dsq = -2.0 * (w**2 / denom**3).sum(dim=-1, keepdim=True)  # d‖x‖²/dμ
        dphi = -0.5 * dsq / sq**1.5
        mu = torch.clamp(mu - phi / dphi, min=0.0)
    x = (q @ (w / (lam + mu)).unsqueeze(-1)).squeeze(-1)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    x = x * torch.clamp(radius / norm, max=1.0)  # remove round-off outside the ball
    return x.to(y.dtype)


def _metric_box_projection(y: Tensor, metric: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``argmin_{lo ≤ x ≤ hi} ‖L^T(x − y)‖²`` with ``U = LLᵀ``, by scipy's bounded least squares."""
    from scipy.optimize import lsq_linear

    d = y.shape[-1]
    ys = y.detach().to("cpu", torch.float64).reshape(-1, d).numpy()
    us = (
        torch.broadcast_to(metric, (*y.shape[:-1], d, d))
        .detach()
        .to("cpu", torch.float64)
        .reshape(-1, d, d)
        .numpy()
    )
    lo_np = np.broadcast_to(lo.detach().to("cpu", torch.float64).numpy(), (d,))
    hi_np = np.broadcast_to(hi.detach().to("cpu", torch.float64).numpy(), (d,))
    out = np.empty_like(ys)
    for i in range(ys.shape[0]):  # a batch of small QPs; scipy has no batched BVLS
        chol = np.linalg.cholesky(0.5 * (us[i] + us[i].T))
        a = chol.T
        res = lsq_linear(a, a @ ys[i], bounds=(lo_np, hi_np), method="bvls", tol=1e-12)
        out[i] = np.clip(res.x, lo_np, hi_np)
    return torch.from_numpy(out).reshape(y.shape).to(y)
