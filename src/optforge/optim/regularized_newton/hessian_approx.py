r"""Hessian approximations for :mod:`optforge.optim.regularized_newton` (pluggable objects).

Paper: Andrei Semenov, Martin Jaggi, Nikita Doikov, "Gradient-Normalized Smoothness for
Optimization with Approximate Hessians", arXiv:2506.13710 (2025). The approximations follow the
official code (epfml/grad-norm-smooth, ``src/approximations.py``).

An approximation is any object with an ``is_psd: bool`` attribute and a method
``__call__(x, oracle) -> H`` where ``x`` is the flat current point and ``oracle`` a
:class:`CurvatureOracle` that can produce the exact Hessian (dense) or Hessian–vector products at
``x`` on demand. ``H`` is one of

* a dense symmetric ``(d, d)`` tensor,
* a :class:`RankOne` ``α·u uᵀ`` (the Fisher term; the solver can use Sherman–Morrison),
* a :class:`HessianOperator` (a matrix-free ``v ↦ H v``; the solver uses conjugate gradients).

A plain callable ``x -> (d, d) tensor`` is accepted wherever an approximation is (wrapped in
:class:`CallableHessian`). All built-ins use ``torch.func`` (``hessian``, ``jacrev``, ``vjp``)
for derivatives of the user's functions.

========================== ==============================================================
``ExactHessian``           ∇²f(x) (``torch.func.hessian`` or HVPs with ``matrix_free=True``)
``ZeroHessian``            H ≡ 0: the method becomes the adaptive gradient method
``FixedHessian``           a constant matrix, e.g. Böhning's bound XᵀX/(4N) + reg·I
``LazyHessian``            recompute a base approximation every ``every`` outer iterations
``SubsampledHessian``      Hessian of the mean loss over a random subset of examples
``GaussNewton``            f = (1/p)‖u(x)‖^p: drop Σ uᵢ∇²uᵢ from the exact Hessian
``FisherTerm``             f = (1/p)‖u(x)‖^p: only (p−2)‖u‖^{p−4}(Jᵀu)(Jᵀu)ᵀ (rank one)
``SoftmaxGaussNewton``     softmax cross-entropy of logits z(x): Σᵢ Jᵢᵀ(diag πᵢ − πᵢπᵢᵀ)Jᵢ / N
                           (the generalized Gauss–Newton matrix = the Fisher information)
``EmpiricalFisher``        mean of per-example gradient outer products
``WeightedGaussNewtonLSE`` log-sum-exp μ·log Σ exp((Ax − b)/μ): (1/μ)Aᵀdiag(π)A
========================== ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from optforge._core import (
    check_in_range,
    check_positive,
    check_positive_int,
    check_seed,
    make_generator,
)

__all__ = [
    "CallableHessian",
    "CurvatureOracle",
    "EmpiricalFisher",
    "ExactHessian",
    "FisherTerm",
    "FixedHessian",
    "GaussNewton",
    "HessianApprox",
    "HessianOperator",
    "LazyHessian",
    "RankOne",
    "SoftmaxGaussNewton",
    "SubsampledHessian",
    "WeightedGaussNewtonLSE",
    "ZeroHessian",
    "as_hessian_approx",
]


@dataclass(frozen=True)
class RankOne:
    """The rank-one matrix ``alpha · u uᵀ`` (``alpha >= 0``), kept factored."""

    u: Tensor
    alpha: Tensor

    def dense(self) -> Tensor:
        return self.alpha * torch.outer(self.u, self.u)


@dataclass(frozen=True)
class HessianOperator:
    """A matrix-free symmetric operator ``v ↦ H v`` on vectors of length ``dim``."""

    matvec: Callable[[Tensor], Tensor]
    dim: int


class CurvatureOracle(Protocol):
    """What an approximation may ask about the objective at the current point."""

    def hessian(self) -> Tensor:
        """The exact dense Hessian ``∇²f(x)``."""
        ...

    def hvp(self, v: Tensor) -> Tensor:
        """The exact Hessian–vector product ``∇²f(x) v``."""
        ...


@runtime_checkable
class HessianApprox(Protocol):
    """An approximation ``H(x)`` of the Hessian; ``is_psd`` says whether it is always PSD."""

    is_psd: bool

    def __call__(
        self, x: Tensor, oracle: CurvatureOracle
    ) -> Tensor | RankOne | HessianOperator: ...


class ExactHessian:
    """The exact Hessian. Dense via ``torch.func.hessian`` (or double backward through a
    closure); with ``matrix_free=True`` a :class:`HessianOperator` of Hessian–vector products
    (for large ``d`` with ``solver="cg"``)."""

    is_psd = False

    def __init__(self, matrix_free: bool = False) -> None:
        self.matrix_free = bool(matrix_free)

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor | HessianOperator:
        if self.matrix_free:
            return HessianOperator(oracle.hvp, x.numel())
        return oracle.hessian()

    def __repr__(self) -> str:
        return f"ExactHessian(matrix_free={self.matrix_free})"


class ZeroHessian:
    """``H ≡ 0``: the step is ``−B⁻¹g/λ``, the paper's first-order member of the family."""

    is_psd = True

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> RankOne:
        return RankOne(torch.zeros_like(x), torch.zeros((), dtype=x.dtype, device=x.device))

    def __repr__(self) -> str:
        return "ZeroHessian()"


class FixedHessian:
    """A constant symmetric matrix, e.g. Böhning's bound ``XᵀX/(4N) + reg·I`` for logistic
    regression. ``is_psd`` is computed once from the smallest eigenvalue."""

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError("matrix must be a square 2-D tensor")
        if not torch.isfinite(matrix).all():
            raise ValueError("matrix contains non-finite values")
        if not torch.allclose(matrix, matrix.T, rtol=1e-10, atol=1e-12):
            raise ValueError("matrix must be symmetric")
        self.matrix = matrix
        scale = float(matrix.abs().max()) if matrix.numel() else 0.0
        self.is_psd = bool(torch.linalg.eigvalsh(matrix.double()).min() >= -1e-12 * max(scale, 1))

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        return self.matrix.to(dtype=x.dtype, device=x.device)

    def __repr__(self) -> str:
        return f"FixedHessian(shape={tuple(self.matrix.shape)})"


class CallableHessian:
    """Wrap a user callable ``x -> (d, d) tensor`` as an approximation."""

    def __init__(self, fn: Callable[[Tensor], Tensor], is_psd: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"hessian must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.is_psd = bool(is_psd)

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        return self.fn(x)


class LazyHessian:
    """Recompute ``base`` every ``every`` outer iterations and reuse it in between.

    The cached matrix and the counter are part of :meth:`state_dict`, so an optimizer using a
    lazy Hessian resumes bit-identically from a checkpoint.
    """

    def __init__(self, base: Any, every: int = 5) -> None:
        self.base = as_hessian_approx(base)
        self.every = check_positive_int("every", every)
        self.is_psd = self.base.is_psd
        self.calls = 0
        self.cached: Tensor | RankOne | HessianOperator | None = None

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor | RankOne | HessianOperator:
        if self.cached is None or self.calls % self.every == 0:
            self.cached = self.base(x, oracle)
        self.calls += 1
        return self.cached

    def state_dict(self) -> dict[str, Any]:
        cached = self.cached
        if isinstance(cached, HessianOperator):
            cached = None  # an operator closes over a point; recompute it after a reload
        elif isinstance(cached, RankOne):
            cached = {"u": cached.u.clone(), "alpha": cached.alpha.clone()}
        elif isinstance(cached, Tensor):
            cached = cached.clone()
        return {"calls": self.calls, "cached": cached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
        cached = state["cached"]
        if isinstance(cached, dict):
            cached = RankOne(cached["u"], cached["alpha"])
        self.cached = cached
        if cached is None:
            self.calls = 0

    def __repr__(self) -> str:
        return f"LazyHessian({self.base!r}, every={self.every})"


class SubsampledHessian:
    """Hessian of the mean per-example loss over a random subset of the examples.

    Args:
        per_example_loss: ``per_example_loss(x, idx) -> (len(idx),)`` losses of examples ``idx``
            (include any regulariser in every example's loss).
        n_examples: number of examples ``N``.
        fraction: fraction of examples in the subset (``ceil(fraction·N)`` rows).
        resample: draw a new subset at every call (default: one fixed subset).
        seed: seed of the dedicated generator that draws the subset.
        is_psd: whether every example's loss is convex (e.g. logistic regression).
    """

    def __init__(
        self,
        per_example_loss: Callable[[Tensor, Tensor], Tensor],
        n_examples: int,
        fraction: float = 0.2,
        *,
        resample: bool = False,
        seed: int | None = 0,
        is_psd: bool = False,
    ) -> None:
        if not callable(per_example_loss):
            raise TypeError("per_example_loss must be callable")
        self.per_example_loss = per_example_loss
        self.n_examples = check_positive_int("n_examples", n_examples)
        self.fraction = check_in_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
        self.resample = bool(resample)
        self.is_psd = bool(is_psd)
        self.generator = make_generator(check_seed("seed", seed))
        self.size = max(1, int(-(-self.fraction * self.n_examples // 1)))
        self.index = self._draw()

    def _draw(self) -> Tensor:
        return torch.randperm(self.n_examples, generator=self.generator)[: self.size].sort().values

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        if self.resample:
            self.index = self._draw()
        idx = self.index.to(x.device)
        return torch.func.hessian(lambda z: self.per_example_loss(z, idx).mean())(x)

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = state["index"].clone()
        self.generator.set_state(state["generator"])


class GaussNewton:
    r"""Gauss–Newton-type approximation of ``f(x) = (1/p)‖u(x)‖^p`` (``p >= 2``):

    .. math::

        H = ‖u‖^{p-2} JᵀJ + (p-2)‖u‖^{p-4} (Jᵀu)(Jᵀu)ᵀ,

    i.e. the exact Hessian without ``‖u‖^{p−2} Σᵢ uᵢ ∇²uᵢ``; exact when ``u`` is affine. ``J`` is
    the Jacobian of ``residuals`` by ``torch.func.jacrev``. Always PSD.
    """

    is_psd = True

    def __init__(self, residuals: Callable[[Tensor], Tensor], p: float = 2.0) -> None:
        if not callable(residuals):
            raise TypeError("residuals must be callable")
        self.residuals = residuals
        self.p = float(check_in_range("p", p, 2.0, float("inf"), high_inclusive=False))

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        u = self.residuals(x).reshape(-1)
        jac = torch.func.jacrev(lambda z: self.residuals(z).reshape(-1))(x)
        norm = torch.linalg.vector_norm(u)
        hess = norm ** (self.p - 2) * (jac.T @ jac) if self.p != 2 else jac.T @ jac
        if self.p != 2:
            jtu = jac.T @ u
            hess = hess + (self.p - 2) * norm ** (self.p - 4) * torch.outer(jtu, jtu)
        return hess


class FisherTerm:
    r"""The rank-one "Fisher term" of ``f(x) = (1/p)‖u(x)‖^p`` (``p > 2``):

    .. math::

        H = (p-2)‖u‖^{p-4}(Jᵀu)(Jᵀu)ᵀ = \frac{p-2}{‖u‖^{p}} ∇f ∇fᵀ,

    returned factored as :class:`RankOne` so the solver can use Sherman–Morrison (O(d²) per
    trial with a dense metric, O(d) with the identity). ``Jᵀu`` comes from one ``torch.func.vjp``.
    Use it with a metric such as ``B = AᵀA`` for ``u = Ax − b`` (the paper's set-up).
    """

    is_psd = True

    def __init__(self, residuals: Callable[[Tensor], Tensor], p: float = 4.0) -> None:
        if not callable(residuals):
            raise TypeError("residuals must be callable")
        self.residuals = residuals
        self.p = float(check_in_range("p", p, 2.0, float("inf"), low_inclusive=False))

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> RankOne:
        u, vjp_fn = torch.func.vjp(lambda z: self.residuals(z).reshape(-1), x)
        (jtu,) = vjp_fn(u)
        norm = torch.linalg.vector_norm(u)
        return RankOne(jtu, (self.p - 2) * norm ** (self.p - 4))


class SoftmaxGaussNewton:
    r"""Generalized Gauss–Newton (= Fisher information) of the softmax cross-entropy of logits
    ``z(x) ∈ R^{N×K}``:

    .. math::

        H = \frac{1}{N}\sum_i J_iᵀ(\operatorname{diag}π_i − π_iπ_iᵀ)J_i,
        \qquad π_i = \mathrm{softmax}(z_i),

    with ``J_i = ∂z_i/∂x`` from ``torch.func.jacrev`` (``reduction="sum"`` drops the ``1/N``).
    Add a regulariser's Hessian with ``ridge`` (``+ ridge·I``). Always PSD; equals the exact
    Hessian when ``z`` is linear in ``x`` (softmax regression).
    """

    is_psd = True

    def __init__(
        self, logits: Callable[[Tensor], Tensor], reduction: str = "mean", ridge: float = 0.0
    ) -> None:
        if not callable(logits):
            raise TypeError("logits must be callable")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.logits, self.reduction, self.ridge = logits, reduction, float(ridge)

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        z = self.logits(x)
        jac = torch.func.jacrev(self.logits)(x).reshape(z.shape[0], z.shape[1], -1)  # (N, K, d)
        prob = torch.softmax(z, dim=-1)
        # (diag π − ππᵀ) J = π ⊙ J − π (πᵀJ)
        pj = prob.unsqueeze(-1) * jac
        weighted = pj - prob.unsqueeze(-1) * pj.sum(dim=1, keepdim=True)
        hess = torch.einsum("nkd,nke->de", jac, weighted)
        if self.reduction == "mean":
            hess = hess / z.shape[0]
        if self.ridge:
            hess = hess + self.ridge * torch.eye(x.numel(), dtype=x.dtype, device=x.device)
        return 0.5 * (hess + hess.T)


class EmpiricalFisher:
    """Mean of per-example gradient outer products ``(1/N) Σᵢ ∇ℓᵢ ∇ℓᵢᵀ`` (+ ``ridge·I``).

    ``per_example_losses(x) -> (N,)``; the per-example gradients are one ``torch.func.jacrev``.
    Always PSD (rank ≤ N).
    """

    is_psd = True

    def __init__(self, per_example_losses: Callable[[Tensor], Tensor], ridge: float = 0.0) -> None:
        if not callable(per_example_losses):
            raise TypeError("per_example_losses must be callable")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.per_example_losses, self.ridge = per_example_losses, float(ridge)

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        grads = torch.func.jacrev(self.per_example_losses)(x).reshape(-1, x.numel())
        hess = grads.T @ grads / grads.shape[0]
        if self.ridge:
            hess = hess + self.ridge * torch.eye(x.numel(), dtype=x.dtype, device=x.device)
        return hess


class WeightedGaussNewtonLSE:
    r"""Weighted Gauss–Newton for ``f(x) = μ log Σᵢ exp((aᵢᵀx − bᵢ)/μ)``:
    ``H = (1/μ) Aᵀ diag(π) A`` with ``π = softmax((Ax − b)/μ)`` — the exact Hessian without its
    rank-one term ``−(1/μ)(Aᵀπ)(Aᵀπ)ᵀ``, hence an upper bound on it."""

    is_psd = True

    def __init__(self, A: Tensor, b: Tensor, mu: float = 1.0) -> None:
        if A.ndim != 2 or b.shape != (A.shape[0],):
            raise ValueError(f"A must be (m, n) and b (m,), got {tuple(A.shape)}, {tuple(b.shape)}")
        self.A, self.b, self.mu = A, b, check_positive("mu", mu)

    def __call__(self, x: Tensor, oracle: CurvatureOracle) -> Tensor:
        prob = torch.softmax((self.A @ x - self.b) / self.mu, dim=0)
        return (self.A.T * prob) @ self.A / self.mu


def as_hessian_approx(hessian: Any) -> HessianApprox:
    """Turn ``"exact"``, ``"zero"``, a ``(d, d)`` tensor, a callable or an approximation object
    into an approximation object; ``TypeError``/``ValueError`` naming ``hessian`` otherwise."""
    if isinstance(hessian, str):
        if hessian == "exact":
            return ExactHessian()
        if hessian == "exact-hvp":
            return ExactHessian(matrix_free=True)
        if hessian == "zero":
            return ZeroHessian()
        raise ValueError(
            f"hessian must be 'exact', 'exact-hvp', 'zero' or an object, got {hessian!r}"
        )
    if isinstance(hessian, Tensor):
        try:
            return FixedHessian(hessian)
        except ValueError as err:
            raise ValueError(f"hessian: {err}") from err
    if hasattr(hessian, "is_psd") and callable(hessian):
        return hessian
    if callable(hessian):
        return CallableHessian(hessian)
    raise TypeError(
        "hessian must be 'exact', 'zero', a (d, d) tensor, a callable x -> (d, d) or a "
        f"HessianApprox, got {type(hessian).__name__}"
    )
