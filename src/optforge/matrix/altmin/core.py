r"""Low-rank matrix completion by (robust) alternating minimization: the sweep.

Given the entries :math:`M_{ij}`, :math:`(i, j) \in \Omega`, of a rank-:math:`k` matrix,
alternating minimization (Jain, Netrapalli, Sanghavi, STOC 2013, "JNS13") fixes :math:`U` and
solves for :math:`V`, then the reverse:

.. math::

    \hat V_{t+1} \approx \arg\min_V \|P_\Omega(U_t V^\top - M)\|_F^2,\quad
    V_{t+1} = \mathrm{QR}(\hat V_{t+1}).Q,\quad
    \hat U_{t+1} \approx \arg\min_U \|P_\Omega(U V_{t+1}^\top - M)\|_F^2,\quad
    U_{t+1} = \mathrm{QR}(\hat U_{t+1}).Q,

and outputs :math:`X = \hat U_T V_T^\top`. Each half-step is one least-squares problem per
column (row), handed to a pluggable :class:`~optforge.matrix.altmin.MaskedLstsqSolver`: exact
normal equations (JNS13) or sketch-and-precondition + PCG (Gu, Song, Yin, Zhang, arXiv
2302.11068, ICLR 2024, "robust" AltMin, whose approximate solves keep the guarantees).

Practical mode (default): all of :math:`\Omega` in every half-step, spectral initialisation
(:func:`~optforge.matrix.altmin.spectral_init`), no clipping, stop when the relative change of
the observed-entry residual falls below ``tol``. JNS13 theory mode: ``sample_splitting=True``
(:func:`split_samples` sends each entry to one of :math:`2T+1` disjoint subsets: one for the
init and a fresh one per half-step) and ``clip_mu=μ`` (zero the init's entries above
:math:`2\mu\sqrt{k/m}`, then QR). Duplicate :math:`(i, j)` pairs raise ``ValueError`` (average
repeated measurements first).

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import robust_altmin_complete
    >>> from optforge.problems import make_incoherent_lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> U, s, V, rows, cols, vals = make_incoherent_lowrank(60, 50, 2, p=0.5, generator=g)
    >>> res = robust_altmin_complete(rows, cols, vals, (60, 50), 2, truth=(U, s, V), generator=g)
    >>> res.history["rel_error"][-1] < 1e-8
    True
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_floating,
    check_nonnegative,
    check_not_meta,
    check_positive,
    check_positive_int,
    make_generator,
)
from optforge.matrix.altmin.auto import choose_solver
from optforge.matrix.altmin.exact import ExactNormalEquations, MaskedLstsqSolver, SolverBackend
from optforge.matrix.altmin.metrics import relative_error
from optforge.matrix.altmin.pattern import ObservedPattern
from optforge.matrix.altmin.sketch import SketchKind
from optforge.matrix.altmin.sketch_pcg import SketchPreconditionedCG
from optforge.matrix.altmin.spectral_init import spectral_init

__all__ = ["CompletionResult", "robust_altmin_complete", "split_samples"]


@dataclass
class CompletionResult:
    """Output of :func:`robust_altmin_complete`: the completion is ``U @ V.T``.

    Attributes:
        U: (m, k) un-normalised left factor of the last half-step.
        V: (n, k) orthonormal right factor.
        n_iters: number of sweeps run.
        history: per-sweep lists ``sweep``, ``rel_train_residual``, ``time`` (cumulative
            seconds), ``flops`` (cumulative analytic count), ``inner_iters`` and ``rel_error``
            (only when ``truth`` was given).
    """

    U: Tensor
    V: Tensor
    n_iters: int
    history: dict[str, list[float]] = field(default_factory=dict)

    def predict(self, rows: Tensor, cols: Tensor) -> Tensor:
        """The completed entries at ``(rows[e], cols[e])``, in O(len(rows)·k)."""
        return (self.U[rows] * self.V[cols]).sum(1)

    def dense(self) -> Tensor:
        """The completed (m, n) matrix ``U @ V.T``."""
        return self.U @ self.V.T


def robust_altmin_complete(
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    shape: tuple[int, int],
    rank: int,
    *,
    n_iters: int = 20,
    solver: MaskedLstsqSolver | Literal["auto", "exact", "sketch"] = "auto",
    backend: SolverBackend = "auto",
    init: Literal["svd", "random"] = "svd",
    sample_splitting: bool = False,
    clip_mu: float | None = None,
    ridge: float = 0.0,
    tol: float = 1e-10,
    truth: tuple[Tensor, Tensor, Tensor] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, Tensor, Tensor], bool] | None = None,
) -> CompletionResult:
    """Complete a low-rank matrix from its entries by (robust) alternating minimization.

    Args:
        rows: (|Ω|,) row index of each observed entry.
        cols: (|Ω|,) column index of each observed entry.
        vals: (|Ω|,) observed values (floating point; its dtype/device are used throughout).
        shape: ``(m, n)``.
        rank: target rank ``k`` (< min(m, n)).
        n_iters: maximum number of sweeps ``T`` (one V half-step and one U half-step each).
        solver: ``"sketch"`` (sketch-and-precondition + PCG, the paper), ``"exact"``
            (normal equations, JNS13), ``"auto"`` (the faster of the two for this rank and
            number of observations per row and column, :func:`choose_solver`) or any
            :class:`MaskedLstsqSolver`.
        backend: how the solvers built from ``"exact"``/``"sketch"``/``"auto"`` apply the
            observed entries (:class:`~optforge.matrix.altmin.ObservedPattern`): ``"auto"``,
            ``"dense"``, ``"sparse"`` or ``"padded"``.
        init: ``"svd"`` (spectral init) or ``"random"`` (Haar-random U₀).
        sample_splitting: JNS13 theory mode: split Ω into 2T+1 random disjoint parts and use a
            fresh one for the init and each half-step (no early stopping).
        clip_mu: incoherence μ for the JNS13 clipping of the init (entries above 2μ√(k/m) are
            zeroed, then QR); ``None`` = no clipping.
        ridge: λ ≥ 0 added to every normal equation.
        tol: stop when the relative change of the observed-entry residual falls below ``tol``.
        truth: optional ``(U_star, s_star, V_star)`` to record ``rel_error`` each sweep.
        generator: all randomness (init, sketches, splitting).
        callback: called as ``callback(sweep, U_hat, V)`` after every sweep; returning
            ``True`` stops the iteration (e.g. at a target error).

    Returns:
        A :class:`CompletionResult` with ``U`` (un-normalised) and ``V`` (orthonormal).
    """
    rows, cols, vals, m, n = _validate_entries(rows, cols, vals, shape, rank)
    n_iters = check_positive_int("n_iters", n_iters)
    check_nonnegative("ridge", ridge)
    check_nonnegative("tol", tol)
    check_choice("init", init, ("svd", "random"))
    if clip_mu is not None:
        check_positive("clip_mu", clip_mu)
    gen = generator if generator is not None else make_generator(None, vals.device)
    if solver == "auto":
        solver = choose_solver(
            rank, torch.bincount(cols, minlength=n), torch.bincount(rows, minlength=m)
        )
    solve = _make_solver(solver, gen, backend=backend)
    k = rank

    if sample_splitting:
        part = split_samples(vals.numel(), 2 * n_iters + 1, gen).to(vals.device)

        def subset(i: int) -> tuple[Tensor, Tensor, Tensor]:
            keep = part == i
            return rows[keep], cols[keep], vals[keep]
    else:

        def subset(i: int) -> tuple[Tensor, Tensor, Tensor]:
            return rows, cols, vals

    start = time.perf_counter()
    r0, c0, v0 = subset(0)
    if init == "svd":
        u = spectral_init(r0, c0, v0, (m, n), k, generator=gen)
    else:
        u = torch.randn(m, k, generator=gen, device=vals.device, dtype=vals.dtype)
        u = torch.linalg.qr(u).Q
    if clip_mu is not None:
        bound = 2.0 * clip_mu * math.sqrt(k / m)
        u = torch.linalg.qr(torch.where(u.abs() > bound, 0.0, u)).Q
    init_flops = float(rows.numel() * (k + 10) * 10)

    hist: dict[str, list[float]] = {
        "sweep": [],
        "rel_train_residual": [],
        "time": [],
        "flops": [],
        "inner_iters": [],
    }
    if truth is not None:
        hist["rel_error"] = []
    vals_norm = float(torch.linalg.norm(vals))
    # the observed-entry residual of every sweep, through the same operators as the solvers
    # (O(|Ω|k) or masked GEMMs; a gather of U[rows] and V[cols] would hold two |Ω| × k copies)
    residual = ObservedPattern.build(
        rows, cols, vals, n, m, backend if backend in ("dense", "sparse") else "auto"
    )
    flops = init_flops
    prev = math.inf
    u_hat = u
    v = torch.zeros(n, k, dtype=vals.dtype, device=vals.device)
    sweeps = 0
    for t in range(n_iters):
        rv, cv, vv = subset(t + 1)
        v_hat = solve(u, rv, cv, vv, n, ridge=ridge)
        flops += solve.last_flops
        inner = solve.last_inner_iters
        v = torch.linalg.qr(v_hat).Q
        ru, cu, vu = subset(n_iters + t + 1)
        u_hat = solve(v, cu, ru, vu, m, ridge=ridge)
        flops += solve.last_flops
        inner += solve.last_inner_iters
        if not bool(torch.isfinite(u_hat).all()):
            raise FloatingPointError(f"non-finite factor at sweep {t + 1}")
        u = torch.linalg.qr(u_hat).Q
        rel = float(torch.linalg.vector_norm(residual.residual_norms(u_hat, v))) / vals_norm
        sweeps = t + 1
        hist["sweep"].append(float(sweeps))
        hist["rel_train_residual"].append(rel)
        hist["flops"].append(flops)
        hist["inner_iters"].append(float(inner))
        if truth is not None:
            hist["rel_error"].append(relative_error(u_hat, v, *truth))
        hist["time"].append(time.perf_counter() - start)
        if callback is not None and callback(sweeps, u_hat, v):
            break
        if not sample_splitting and math.isfinite(prev) and abs(prev - rel) <= tol * prev:
            break
        prev = rel
    return CompletionResult(U=u_hat, V=v, n_iters=sweeps, history=hist)


def split_samples(n_obs: int, n_parts: int, generator: torch.Generator | None = None) -> Tensor:
    """JNS13 sample splitting: send each observed entry independently and uniformly to one of
    ``n_parts`` subsets. Returns the subset id of every entry (so the subsets are disjoint and
    cover Ω by construction)."""
    check_positive_int("n_parts", n_parts)
    device = generator.device if generator is not None else "cpu"
    return torch.randint(n_parts, (n_obs,), generator=generator, device=device)


def _validate_entries(
    rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int], rank: int
) -> tuple[Tensor, Tensor, Tensor, int, int]:
    for name, t in (("rows", rows), ("cols", cols), ("vals", vals)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not (rows.numel() == cols.numel() == vals.numel()):
        raise ValueError(
            f"rows, cols and vals must have the same length, got {rows.numel()}, "
            f"{cols.numel()}, {vals.numel()}"
        )
    if rows.dtype.is_floating_point or cols.dtype.is_floating_point:
        raise TypeError("rows and cols must be integer tensors")
    # float32/float64: the sparse (CSR) kernels have no float16 path
    check_floating("vals", vals, allow_half=False)
    for name, t in (("rows", rows), ("cols", cols), ("vals", vals)):
        check_not_meta(name, t)
    if len(shape) != 2:
        raise ValueError(f"shape must be (m, n), got {shape!r}")
    m = check_positive_int("shape[0]", shape[0])
    n = check_positive_int("shape[1]", shape[1])
    check_positive_int("rank", rank)
    if rank >= min(m, n):
        raise ValueError(f"rank must be < min(m, n) = {min(m, n)}, got {rank}")
    if vals.numel() == 0:
        raise ValueError("vals is empty: no observed entries")
    bad = ~torch.isfinite(vals)
    if bool(bad.any()):
        raise ValueError(f"vals contains {int(bad.sum())} non-finite observed value(s)")
    rows, cols = rows.long(), cols.long()
    if int(rows.min()) < 0 or int(rows.max()) >= m:
        raise ValueError(f"rows must lie in [0, {m}), got range [{rows.min()}, {rows.max()}]")
    if int(cols.min()) < 0 or int(cols.max()) >= n:
        raise ValueError(f"cols must lie in [0, {n}), got range [{cols.min()}, {cols.max()}]")
    key = rows * n + cols
    if torch.unique(key).numel() != key.numel():
        raise ValueError("duplicate (row, col) pairs in the observed entries; average them first")
    for name, idx, size in (("row", rows, m), ("column", cols, n)):
        counts = torch.bincount(idx, minlength=size)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"{empty.numel()} {name}(s) have no observed entry (first: {int(empty[0])}); "
                f"they cannot be completed — drop them"
            )
        few = int((counts < rank).sum())
        if few:
            warnings.warn(
                f"{few} {name}(s) have fewer than rank={rank} observations; their least-squares "
                f"problems are under-determined and get the minimum-norm (or ridge) solution",
                RuntimeWarning,
                stacklevel=3,
            )
    return rows, cols, vals, m, n


def _make_solver(
    solver: MaskedLstsqSolver | str,
    generator: torch.Generator,
    sketch: SketchKind = "countsketch",
    pcg_iters: int = 3,
    backend: SolverBackend = "auto",
) -> MaskedLstsqSolver:
    if solver == "exact":
        return ExactNormalEquations(backend=backend)
    if solver == "sketch":
        return SketchPreconditionedCG(
            sketch=sketch, max_iter=pcg_iters, generator=generator, backend=backend
        )
    if isinstance(solver, str) or not callable(solver):
        raise ValueError(f"solver must be 'auto', 'exact', 'sketch' or a callable, got {solver!r}")
    return solver
