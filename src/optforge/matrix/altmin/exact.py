r"""Exact per-column least squares (the JNS13 reference solver) and the solver interface.

With the factor ``U`` fixed, a half-step of alternating minimization solves, for every column
``j``, the ``k``-variable problem ``min_v ‖A_j v − b_j‖² + λ‖v‖²`` with ``A_j = U[Ω_j]`` and
``b_j = M[Ω_j, j]`` (Jain, Netrapalli, Sanghavi, STOC 2013). :class:`ExactNormalEquations`
forms the normal equations

.. math::

    G_j = A_j^\top A_j + \lambda I,\qquad G_j v_j = A_j^\top b_j

for all columns at once and solves them by a batched Cholesky factorisation, at
``|Ω|k² + nk³/3`` flops per half-step. The Grams are one product of the observed pattern with
the Khatri–Rao square ``[u_i ⊗ u_i]`` of ``U`` (dense BLAS-3 GEMMs when the pattern is dense
enough, a sparse CSR product otherwise; see :class:`~optforge.matrix.altmin.ObservedPattern`).
Columns whose Gram is singular (fewer than ``k`` observations and no ridge, or numerically
rank-deficient) get the minimum-norm solution ``pinv(G_j) A_jᵀ b_j``.

Any object following :class:`MaskedLstsqSolver` can replace it in
:func:`~optforge.matrix.altmin.robust_altmin_complete`.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import ExactNormalEquations
    >>> U = torch.eye(3, 2, dtype=torch.float64)
    >>> rows, cols = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    >>> vals = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    >>> ExactNormalEquations()(U, rows, cols, vals, n_cols=2)
    tensor([[1., 2.],
            [3., 4.]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from optforge._core import check_choice, check_positive_int
from optforge.matrix.altmin.layout import ColumnLayout, _LayoutCache
from optforge.matrix.altmin.pattern import _PatternCache, resolve_backend

__all__ = ["ExactNormalEquations", "MaskedLstsqSolver", "SolverBackend"]

#: How a solver applies the observed entries: ``"auto"``, ``"dense"`` or ``"sparse"`` (an
#: :class:`~optforge.matrix.altmin.ObservedPattern` backend), or ``"padded"`` (the padded
#: (n, d_max, k) layout with gathers and ``bmm``, the implementation before issue #27).
SolverBackend = Literal["auto", "dense", "sparse", "padded"]
_SOLVER_BACKENDS = ("auto", "dense", "sparse", "padded")


class MaskedLstsqSolver(Protocol):
    """Solves ``min_V ||P_Ω(U Vᵀ − M)||_F`` column by column (one k-variable problem per column).

    Implementations set ``last_flops`` (analytic flop count of the last call) and
    ``last_inner_iters``.
    """

    last_flops: float
    last_inner_iters: int

    def __call__(
        self,
        U: Tensor,
        rows: Tensor,
        cols: Tensor,
        vals: Tensor,
        n_cols: int,
        V0: Tensor | None = None,
        ridge: float = 0.0,
    ) -> Tensor: ...


class ExactNormalEquations:
    """Exact per-column least squares via the k×k normal equations, batched over columns.

    Forms every ``G_j = A_jᵀA_j + ridge·I`` and ``A_jᵀ b_j`` through an
    :class:`~optforge.matrix.altmin.ObservedPattern` built once per pattern of Ω (the pattern
    matrix times the Khatri–Rao square of ``U``: dense BLAS-3 GEMMs on chunks of columns, or a
    sparse CSR product at low density) and solves all columns by a batched Cholesky; columns
    whose Gram is singular (fewer than k observations, no ridge) get the minimum-norm solution
    ``pinv(G_j) A_jᵀ b_j``. Cost ``|Ω|k² + nk³/3`` flops (``last_flops``).

    Args:
        chunk_size: padded entries per chunk of columns (``backend="padded"`` only).
        backend: ``"auto"`` (default: dense GEMMs from an observed fraction of
            :func:`exact_min_density` ``(k)`` on, if the dense pattern fits, else sparse),
            ``"dense"``, ``"sparse"``, or
            ``"padded"`` (the former (n, d_max, k) gather + ``bmm`` layout, kept for
            comparison).
    """

    def __init__(self, chunk_size: int = 2**22, backend: SolverBackend = "auto") -> None:
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.backend = check_choice("backend", backend, _SOLVER_BACKENDS)
        self.last_flops = 0.0
        self.last_inner_iters = 0
        self._cache = _LayoutCache()
        self._patterns = _PatternCache()

    def prepare(
        self, rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int, n_rows: int, k: int
    ) -> None:
        """Build the pattern that a call with these ``rows``/``cols``/``vals`` (and a factor
        ``U`` of shape ``(n_rows, k)``) uses, ahead of the call (e.g. outside a timed region);
        the call then finds it built. No effect with ``backend="padded"``."""
        if self.backend == "padded":
            return
        backend = resolve_backend(self.backend, rows.numel(), n_cols, n_rows, exact_min_density(k))
        self._patterns.get(rows, cols, vals, n_cols, n_rows, backend)

    def __call__(
        self,
        U: Tensor,
        rows: Tensor,
        cols: Tensor,
        vals: Tensor,
        n_cols: int,
        V0: Tensor | None = None,
        ridge: float = 0.0,
    ) -> Tensor:
        k = U.shape[1]
        if self.backend == "padded":
            return self._padded(U, rows, cols, vals, n_cols, ridge)
        backend = resolve_backend(
            self.backend, rows.numel(), n_cols, U.shape[0], exact_min_density(k)
        )
        pattern = self._patterns.get(rows, cols, vals, n_cols, U.shape[0], backend)
        gram = pattern.gram(U)
        if ridge > 0:
            gram.diagonal(dim1=1, dim2=2).add_(ridge)
        out = _solve_gram(gram, pattern.rhs(U))
        self.last_flops = float(pattern.n_obs * k * k + n_cols * k**3 / 3)
        self.last_inner_iters = 0
        return out

    def _padded(
        self, U: Tensor, rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int, ridge: float
    ) -> Tensor:
        k = U.shape[1]
        layout = self._cache.get(rows, cols, vals, n_cols, U.shape[0])
        step = max(1, self.chunk_size // layout.index.shape[1])
        out = []
        for j0 in range(0, n_cols, step):
            part = ColumnLayout(
                layout.index[j0 : j0 + step], layout.target[j0 : j0 + step], layout.counts, 0
            )
            a = part.design(U)
            gram = a.transpose(1, 2) @ a
            if ridge > 0:
                gram = gram + ridge * torch.eye(k, dtype=U.dtype, device=U.device)
            rhs = (a.transpose(1, 2) @ part.target[:, :, None])[:, :, 0]
            out.append(_solve_gram(gram, rhs))
        self.last_flops = float(layout.n_obs * k * k + n_cols * k**3 / 3)
        self.last_inner_iters = 0
        return torch.cat(out)


def exact_min_density(k: int) -> float:
    """Observed fraction from which the exact solver's ``backend="auto"`` uses dense GEMMs:
    ``min(0.3, 3.2/k)`` (measured on a CPU: the sparse Khatri–Rao product of ``k(k+1)/2``
    columns is cheap at small k, so it stays ahead up to p ≈ 0.3 at k = 4, 0.2 at k = 16 and
    0.1 at k = 32)."""
    return min(0.3, 3.2 / max(1, k))


def _solve_gram(gram: Tensor, rhs: Tensor) -> Tensor:
    """Batched SPD solve with a minimum-norm fallback for singular Grams."""
    chol, info = torch.linalg.cholesky_ex(gram)
    sol = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    scale = gram.diagonal(dim1=1, dim2=2).amax(1)
    # Cholesky "succeeds" on numerically singular Grams; check the pivots as well.
    piv = chol.diagonal(dim1=1, dim2=2).amin(1) ** 2
    bad = (info != 0) | ~(piv > 1e-12 * scale) | ~torch.isfinite(sol).all(1)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        pinv = torch.linalg.pinv(gram[idx], hermitian=True, rtol=1e-10)
        sol[idx] = (pinv @ rhs[idx][:, :, None])[:, :, 0]
    return sol
