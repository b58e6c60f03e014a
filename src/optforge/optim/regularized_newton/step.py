r"""One regularized Newton step ``δ = −(H + λB)⁻¹ g`` and the linear solvers behind it.

``H`` is what a Hessian approximation returns (see :mod:`.hessian_approx`): a dense ``(d, d)``
tensor, a :class:`~.hessian_approx.RankOne` ``αuuᵀ`` or a matrix-free
:class:`~.hessian_approx.HessianOperator`. ``B`` is a fixed SPD metric (identity by default)
with norms ``‖h‖ = (hᵀBh)^{1/2}`` and ``‖g‖_* = (gᵀB⁻¹g)^{1/2}``.

Solvers:

* ``"cholesky"``: ``torch.linalg.cholesky_ex`` on ``H + λB``, checking ``info``;
* ``"cg"``: conjugate gradients on ``v ↦ Hv + λBv`` (matrix-free);
* ``"sherman_morrison"``: for a rank-one ``H = αuuᵀ``,
  ``(αuuᵀ + λB)⁻¹g = (1/λ)[B⁻¹g − α B⁻¹u (uᵀB⁻¹g) / (λ + α uᵀB⁻¹u)]``;
* ``"auto"``: Sherman–Morrison for rank one, CG for operators, Cholesky otherwise.

Example::

    step = regularized_newton_step(H, g, lam=0.1)               # −(H + 0.1 I)⁻¹ g
    step = regularized_newton_step(RankOne(u, alpha), g, 0.1, metric=B)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_choice, check_nonnegative, check_tensor
from optforge.optim.regularized_newton.hessian_approx import HessianOperator, RankOne

__all__ = ["Solver", "regularized_newton_step"]

Solver = Literal["auto", "cholesky", "cg", "sherman_morrison"]
_SOLVERS = ("auto", "cholesky", "cg", "sherman_morrison")


def regularized_newton_step(
    hessian: Tensor | RankOne | HessianOperator,
    grad: Tensor,
    lam: float,
    metric: Tensor | None = None,
    solver: Solver = "auto",
    cg_tol: float = 1e-10,
    cg_maxiter: int | None = None,
) -> Tensor:
    """Return ``δ = −(H + λB)⁻¹ g`` with the chosen solver; ``RuntimeError`` if it fails.

    Args:
        hessian: dense ``(d, d)``, :class:`RankOne` or :class:`HessianOperator`.
        grad: ``g``, shape ``(d,)``.
        lam: ``λ >= 0``.
        metric: SPD ``B`` (``None`` = identity).
        solver: ``"auto"``, ``"cholesky"``, ``"cg"`` or ``"sherman_morrison"``.
        cg_tol: relative residual tolerance of CG.
        cg_maxiter: CG iteration cap (default ``10·d``).
    """
    check_tensor("grad", grad, ndim=1, allow_half=False)
    check_nonnegative("lam", lam)
    d = grad.numel()
    if isinstance(hessian, Tensor):
        check_tensor("hessian", hessian, shape=(d, d), device=grad.device, owner="grad")
    elif isinstance(hessian, RankOne):
        check_tensor("hessian.u", hessian.u, shape=(d,), device=grad.device, owner="grad")
    elif not isinstance(hessian, HessianOperator):
        raise TypeError(
            f"hessian must be a (d, d) tensor, a RankOne or a HessianOperator, got "
            f"{type(hessian).__name__}"
        )
    m = _Metric(metric, grad.numel(), grad.dtype, grad.device)
    step, ok = _Solve(hessian, m, _check_solver(solver), cg_tol, cg_maxiter)(grad, float(lam))
    if not ok:
        raise RuntimeError("H + λB is not positive definite; increase lam")
    return step


# ---------------------------------------------------------------------------------------------
# Private helpers: the metric, the per-iteration solver, conjugate gradients


def _check_solver(solver: str) -> str:
    return check_choice("solver", solver, _SOLVERS)


class _Metric:
    """``B`` (or the identity) with its Cholesky factor, for ``Bv``, ``B⁻¹v`` and ``‖g‖_*``."""

    def __init__(
        self, metric: Tensor | None, dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.identity = metric is None
        self.dim = dim
        if metric is None:
            self.matrix = self.chol = None
            return
        if not isinstance(metric, Tensor) or metric.shape != (dim, dim):
            shape = tuple(metric.shape) if isinstance(metric, Tensor) else type(metric).__name__
            raise ValueError(f"metric must be a ({dim}, {dim}) tensor, got {shape}")
        if not torch.isfinite(metric).all():
            raise ValueError("metric contains non-finite values")
        matrix = metric.to(dtype=dtype, device=device)
        if not torch.allclose(matrix, matrix.T, rtol=1e-8, atol=1e-12):
            raise ValueError("metric must be symmetric positive definite (it is not symmetric)")
        chol, info = torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            raise ValueError("metric must be symmetric positive definite (Cholesky failed)")
        self.matrix, self.chol = matrix, chol

    def apply(self, v: Tensor) -> Tensor:
        return v if self.matrix is None else self.matrix @ v

    def solve(self, v: Tensor) -> Tensor:
        if self.chol is None:
            return v
        return torch.cholesky_solve(v.unsqueeze(-1), self.chol).squeeze(-1)

    def dual_norm(self, g: Tensor) -> float:
        """``‖g‖_* = (gᵀB⁻¹g)^{1/2}`` by one triangular solve (no explicit inverse)."""
        if self.chol is None:
            return float(torch.linalg.vector_norm(g))
        z = torch.linalg.solve_triangular(self.chol, g.unsqueeze(-1), upper=False)
        return float(torch.linalg.vector_norm(z))


class _Solve:
    """``g, λ ↦ (−(H + λB)⁻¹ g, ok)`` for one outer iteration's fixed ``H``."""

    def __init__(
        self, hess: Any, metric: _Metric, solver: str, cg_tol: float, cg_maxiter: int | None
    ) -> None:
        self.hess, self.metric, self.cg_tol, self.cg_maxiter = hess, metric, cg_tol, cg_maxiter
        if isinstance(hess, RankOne) and solver in ("auto", "sherman_morrison"):
            self.kind = "sherman_morrison"
            self.binv_u = metric.solve(hess.u)
            self.u_binv_u = hess.u @ self.binv_u
        elif isinstance(hess, HessianOperator) or solver == "cg":
            self.kind = "cg"
        else:
            self.kind = "cholesky"
            self.dense = hess.dense() if isinstance(hess, RankOne) else hess

    def __call__(self, g: Tensor, lam: float) -> tuple[Tensor, bool]:
        if self.kind == "sherman_morrison":
            # (αuuᵀ + λB)⁻¹g = (1/λ)[B⁻¹g − α B⁻¹u (uᵀB⁻¹g) / (λ + α uᵀB⁻¹u)]
            if lam <= 0:
                return g, False
            binv_g = self.metric.solve(g)
            alpha = self.hess.alpha
            coef = alpha * (self.hess.u @ binv_g) / (lam + alpha * self.u_binv_u)
            return -(binv_g - coef * self.binv_u) / lam, True
        if self.kind == "cg":
            matvec = self.hess.matvec if isinstance(self.hess, HessianOperator) else None
            if matvec is None:
                dense = self.hess.dense() if isinstance(self.hess, RankOne) else self.hess
                matvec = dense.__matmul__
            sol, ok = _cg(lambda v: matvec(v) + lam * self.metric.apply(v), g, self.cg_tol,
                          self.cg_maxiter or 10 * g.numel())  # fmt: skip
            return -sol, ok
        if self.metric.identity:
            system = self.dense + lam * torch.eye(g.numel(), dtype=g.dtype, device=g.device)
        else:
            system = self.dense + lam * self.metric.matrix
        chol, info = torch.linalg.cholesky_ex(system)
        if int(info) != 0:
            return g, False
        return -torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1), True


def _cg(
    matvec: Callable[[Tensor], Tensor], b: Tensor, tol: float, maxiter: int
) -> tuple[Tensor, bool]:
    """Conjugate gradients for ``Ms = b``; ``ok=False`` on non-positive curvature."""
    s = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (tol * torch.linalg.vector_norm(b)) ** 2
    for _ in range(maxiter):
        if rr <= stop:
            break
        mp = matvec(p)
        curv = p @ mp
        if not curv > 0:
            return s, False
        a = rr / curv
        s = s + a * p
        r = r - a * mp
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return s, True
