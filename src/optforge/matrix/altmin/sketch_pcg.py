r"""Sketch-and-precondition least squares with preconditioned CG (the paper's FastRegression).

Gu, Song, Yin, Zhang (arXiv 2302.11068, ICLR 2024) show that alternating minimization keeps the
JNS13 guarantees when each per-column regression :math:`\min_v \|A_j v - b_j\|` is solved only
approximately, in time nearly linear in its size. :class:`SketchPreconditionedCG` does, for all
columns at once:

.. math::

    S_j A_j = Q_j R_j,\qquad v^0 = R_j^{-1} Q_j^\top S_j b_j,\qquad
    v^{t+1} = \mathrm{PCG}\big(A_j^\top A_j + \lambda I,\ A_j^\top b_j;\ (R_j^\top R_j)^{-1}\big),

a sketch-and-solve warm start followed by ``max_iter`` steps of conjugate gradients on the
normal equations preconditioned by the sketch's R factor (:math:`A_j R_j^{-1}` is well
conditioned when :math:`S_j` embeds the column space of :math:`A_j`). A half-step costs
:math:`O(|\Omega| k (q+3) + n s k^2)` flops instead of the :math:`O(|\Omega| k^2 + n k^3)` of
exact normal equations.

Choices: ``max_iter`` (default 3) PCG steps after the warm start, optionally stopping at a
relative preconditioned residual ``rtol``; sketch size ``max(4k, k + 8)`` rows; columns with
``d_j ≤ s`` use ``S_j = I`` (their exact QR); columns with fewer than ``k`` observations (no
ridge) and columns whose sketch is numerically rank-deficient get the exact (minimum-norm)
solve. Plain preconditioned Richardson iteration is not offered: it diverges with weak sketches.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import SketchPreconditionedCG, robust_altmin_complete
    >>> from optforge.problems import make_incoherent_lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> *_, rows, cols, vals = make_incoherent_lowrank(80, 60, 3, p=0.5, generator=g)
    >>> solver = SketchPreconditionedCG(sketch="srht", max_iter=2, generator=g)
    >>> res = robust_altmin_complete(rows, cols, vals, (80, 60), 3, solver=solver, generator=g)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_nonnegative,
    check_nonnegative_int,
    check_positive_int,
)
from optforge.matrix.altmin.exact import _solve_gram
from optforge.matrix.altmin.layout import _LayoutCache
from optforge.matrix.altmin.sketch import _SKETCHES, SketchKind, sketch_columns

__all__ = ["SketchPreconditionedCG"]


class SketchPreconditionedCG:
    """Approximate per-column least squares by sketch-and-precondition + preconditioned CG.

    For every column at once: sketch ``S_j A_j = Q_j R_j`` (batched QR; columns with
    ``d_j ≤ s`` use ``S_j = I``, i.e. their exact QR), warm start
    ``v⁰ = R_j⁻¹Q_jᵀS_j b_j`` (sketch-and-solve), then ``max_iter`` steps of CG on
    ``(A_jᵀA_j + λI) v = A_jᵀb_j`` preconditioned by ``(R_jᵀR_j)⁻¹``. A ridge ``λ`` enters the
    preconditioner through the augmented sketch ``[S_j A_j; √λ I]``. Products with the
    ``A_j`` are batched matrix–vector products on the padded
    :class:`~optforge.matrix.altmin.ColumnLayout` (O(|Ω|k) each). Cost ``|Ω|k(q+3) + n s k²``
    flops (counted in ``last_flops``).

    Args:
        sketch: ``"countsketch"`` (default), ``"srht"`` or ``"gaussian"``.
        sketch_size: sketch rows ``s``, an int or a function of ``k``
            (default ``max(4k, k + 8)``).
        max_iter: PCG iterations ``q`` after the warm start (0 = sketch-and-solve only).
        rtol: stop early once every column's preconditioned residual norm has dropped by
            this factor (0 = always run ``max_iter``).
        generator: randomness of the sketches.
        track_residuals: record ``‖A_j v − b_j‖`` per column after the warm start and after
            every iteration in ``last_residuals`` ((iters+1, n) tensor).
    """

    def __init__(
        self,
        sketch: SketchKind = "countsketch",
        sketch_size: int | Callable[[int], int] | None = None,
        max_iter: int = 3,
        rtol: float = 0.0,
        generator: torch.Generator | None = None,
        track_residuals: bool = False,
    ) -> None:
        check_choice("sketch", sketch, _SKETCHES)
        max_iter = check_nonnegative_int("max_iter", max_iter)
        if sketch_size is not None and not callable(sketch_size):
            check_positive_int("sketch_size", sketch_size)
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.max_iter = max_iter
        self.rtol = check_nonnegative("rtol", rtol)
        self.generator = generator
        self.track_residuals = track_residuals
        self.last_flops = 0.0
        self.last_inner_iters = 0
        self.last_residuals: Tensor | None = None
        self._cache = _LayoutCache()

    def size_for(self, k: int) -> int:
        """The sketch size used for rank ``k``."""
        if self.sketch_size is None:
            return max(4 * k, k + 8)
        s = self.sketch_size(k) if callable(self.sketch_size) else self.sketch_size
        return check_positive_int("sketch_size", int(s))

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
        s = self.size_for(k)
        if s < k:
            raise ValueError(f"sketch_size must be >= rank k={k}, got {s}")
        layout = self._cache.get(rows, cols, vals, n_cols, U.shape[0])
        a = layout.design(U)  # (n, d_max, k)
        b = layout.target
        sa, sb = sketch_columns(a, b, s, self.sketch, self.generator)
        # A column with d_j <= s gains nothing from sketching: use its own rows (S_j = I), which
        # gives the exact QR and avoids ill-conditioned sketches of very short columns.
        short = layout.counts <= s
        if bool(short.any()):
            d_max = a.shape[1]
            own_a = torch.nn.functional.pad(a[:, :s], (0, 0, 0, max(0, s - d_max)))
            own_b = torch.nn.functional.pad(b[:, :s], (0, max(0, s - d_max)))
            sa = torch.where(short[:, None, None], own_a, sa)
            sb = torch.where(short[:, None], own_b, sb)
        if ridge > 0:
            eye = math.sqrt(ridge) * torch.eye(k, dtype=U.dtype, device=U.device)
            sa = torch.cat((sa, eye.expand(n_cols, k, k)), 1)
            sb = torch.cat((sb, sb.new_zeros(n_cols, k)), 1)
        q_fac, r_fac = torch.linalg.qr(sa)
        diag = r_fac.diagonal(dim1=1, dim2=2).abs()
        scale = diag.amax(1).clamp_min(torch.finfo(U.dtype).tiny)
        weak = diag.amin(1) <= 1e-8 * scale
        if bool(weak.any()):  # rank-deficient sketch: neutral preconditioner, exact fallback below
            eye_k = torch.eye(k, dtype=U.dtype, device=U.device)
            r_fac = torch.where(weak[:, None, None], eye_k, r_fac)
        if V0 is not None:
            v = V0.clone()
        else:
            v = _tri_solve(r_fac, (q_fac.transpose(1, 2) @ sb[:, :, None])[:, :, 0])
            v = torch.where(weak[:, None], 0.0, v)
        a_t = a.transpose(1, 2)

        def normal_op(p: Tensor) -> Tensor:
            out = (a_t @ (a @ p[:, :, None]))[:, :, 0]
            return out + ridge * p if ridge > 0 else out

        def precond(r: Tensor) -> Tensor:
            y = _tri_solve(r_fac.transpose(1, 2), r, upper=False)
            return _tri_solve(r_fac, y)

        def col_resid(v: Tensor) -> Tensor:
            return torch.linalg.norm(b - (a @ v[:, :, None])[:, :, 0], dim=1)

        residuals = [col_resid(v)] if self.track_residuals else []
        r = (a_t @ (b - (a @ v[:, :, None])[:, :, 0])[:, :, None])[:, :, 0]
        if ridge > 0:
            r = r - ridge * v
        z = precond(r)
        p = z.clone()
        rz = (r * z).sum(1)
        rz0 = rz.clone()
        iters = 0
        for _ in range(self.max_iter):
            if self.rtol > 0 and bool((rz <= (self.rtol**2) * rz0).all()):
                break
            w = normal_op(p)
            pw = (p * w).sum(1)
            alpha = torch.where(pw > 0, rz / torch.where(pw > 0, pw, 1.0), 0.0)
            v = v + alpha[:, None] * p
            r = r - alpha[:, None] * w
            z = precond(r)
            rz_new = (r * z).sum(1)
            beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
            p = z + beta[:, None] * p
            rz = rz_new
            iters += 1
            if self.track_residuals:
                residuals.append(col_resid(v))
        fallback = weak | ((layout.counts < k) if ridge == 0 else torch.zeros_like(weak))
        if bool(fallback.any()):
            idx = fallback.nonzero().squeeze(1)
            gram = a[idx].transpose(1, 2) @ a[idx]
            if ridge > 0:
                gram = gram + ridge * torch.eye(k, dtype=U.dtype, device=U.device)
            rhs = (a[idx].transpose(1, 2) @ b[idx][:, :, None])[:, :, 0]
            v = v.clone()
            v[idx] = _solve_gram(gram, rhs)
        self.last_residuals = torch.stack(residuals) if residuals else None
        self.last_inner_iters = iters
        self.last_flops = float(layout.n_obs * k * (iters + 3) + n_cols * s * k * k)
        return v


def _tri_solve(r_fac: Tensor, rhs: Tensor, upper: bool = True) -> Tensor:
    return torch.linalg.solve_triangular(r_fac, rhs[:, :, None], upper=upper)[:, :, 0]
