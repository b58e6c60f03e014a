r"""The adaptive search over γ of one outer iteration (Algorithm 1, inner loop).

With ``H = H(x)`` computed once per outer iteration, each trial sets

.. math::

    λ = \max\Big(\frac{‖∇f(x)‖_*}{γ + ε},\ λ_{\min}\Big),\qquad
    x^+ = x − (H + λB)^{-1}∇f(x),

and accepts when ``f(x) − f(x⁺) ≥ ‖∇f(x⁺)‖_*² / (8λ)`` (``acceptance="func"``, Algorithm 1) or
``⟨∇f(x⁺), x − x⁺⟩ ≥ ‖∇f(x⁺)‖_*² / (4λ)`` (``acceptance="grad"``). On acceptance
``γ ← max(2γ, γ_min)``; on rejection ``γ ← γ/2`` and the trial is repeated, at most
``max_search`` times.

Choices:

* ``lambda_eps`` is the guard ``ε`` in λ; the stopping tolerance is separate (``ftol``).
* A failed factorisation (``H + λB`` not PD, possible for an indefinite ``H``) or a non-finite
  trial loss is a rejected trial (``γ ← γ/2``). If every trial fails that way, no step is taken
  and ``RuntimeError`` / ``FloatingPointError`` is raised with the diagnostics.
* After ``max_search`` rejected-but-valid trials the last trial is taken
  (``on_exhausted="accept"``) and counted, or the caller stops (``on_exhausted="stop"``).
* ``lambda_min`` (default 0) floors λ, for singular approximations near a stationary point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optforge._core import check_choice, check_nonnegative, check_positive, check_positive_int
from optforge.optim.regularized_newton.hessian_approx import (
    FisherTerm,
    HessianOperator,
    RankOne,
    ZeroHessian,
    as_hessian_approx,
)
from optforge.optim.regularized_newton.step import _check_solver, _Metric, _Solve

__all__: list[str] = []


@dataclass
class _Options:
    hessian: Any
    metric: _Metric
    gamma0: float
    gamma_min: float
    lambda_eps: float
    lambda_min: float
    max_search: int
    acceptance: str
    solver: str
    cg_tol: float
    cg_maxiter: int | None
    max_dense_dim: int
    on_exhausted: str

    @staticmethod
    def validate(**kw: Any) -> None:
        check_positive("gamma0", kw["gamma0"])
        check_nonnegative("gamma_min", kw["gamma_min"])
        check_nonnegative("lambda_eps", kw["lambda_eps"])
        check_nonnegative("lambda_min", kw["lambda_min"])
        check_positive_int("max_search", kw["max_search"])
        check_positive("cg_tol", kw["cg_tol"])
        if kw["cg_maxiter"] is not None:
            check_positive_int("cg_maxiter", kw["cg_maxiter"])
        check_positive_int("max_dense_dim", kw["max_dense_dim"])
        check_choice("acceptance", kw["acceptance"], ("func", "grad"))
        check_choice("on_exhausted", kw["on_exhausted"], ("accept", "stop"))
        _check_solver(kw["solver"])

    @classmethod
    def build(
        cls, *, hessian: Any, metric: Tensor | None, dim: int, dtype: torch.dtype,
        device: torch.device, **kw: Any,
    ) -> _Options:  # fmt: skip
        cls.validate(**kw)
        approx = as_hessian_approx(hessian)
        dense_solver = kw["solver"] in ("cholesky",) or (
            kw["solver"] == "auto" and not getattr(approx, "matrix_free", False)
        )
        if dim > kw["max_dense_dim"] and dense_solver and not _is_rank_one_approx(approx):
            raise ValueError(
                f"max_dense_dim: the problem has d = {dim} > max_dense_dim = "
                f"{kw['max_dense_dim']}; forming a dense (d, d) Hessian is too costly. Use "
                "hessian='exact-hvp' with solver='cg' (matrix-free) or raise max_dense_dim"
            )
        return cls(hessian=approx, metric=_Metric(metric, dim, dtype, device), **kw)


@dataclass
class _SearchOut:
    x: Tensor
    f: float
    g: Tensor
    gnorm: float
    gamma: float
    lam: float
    trials: int
    accepted: bool
    step: Tensor


def _search(
    x: Tensor,
    f: float,
    g: Tensor,
    gnorm: float,
    gamma: float,
    hess: Any,
    evaluate: Callable[[Tensor], tuple[float, Tensor]],
    opts: _Options,
    counters: dict[str, Any],
    read_back: Callable[[], Tensor] | None = None,
) -> _SearchOut:
    """The adaptive search over γ of one outer iteration (Algorithm 1, inner loop)."""
    solve = _Solve(hess, opts.metric, opts.solver, opts.cg_tol, opts.cg_maxiter)
    last: _SearchOut | None = None
    n_failed = n_nonfinite = 0
    lam = math.nan
    for trial in range(1, opts.max_search + 1):
        denom = gamma + opts.lambda_eps
        lam = max(gnorm / denom, opts.lambda_min) if denom > 0 else math.inf
        if not math.isfinite(lam):
            n_failed += 1
            gamma /= 2
            continue
        step, ok = solve(g, lam)
        counters["nfactor"] += 1
        if not ok or not torch.isfinite(step).all():
            n_failed += 1
            gamma /= 2
            continue
        x_new = x + step
        f_new, g_new = evaluate(x_new)
        if read_back is not None:
            x_new = read_back()  # the parameters as stored (rounded to their dtype)
        if not (math.isfinite(f_new) and torch.isfinite(g_new).all()):
            n_nonfinite += 1
            gamma /= 2
            continue
        gnorm_new = opts.metric.dual_norm(g_new)
        if opts.acceptance == "func":
            ok = f - f_new >= gnorm_new**2 / (8 * lam)
        else:
            ok = float(g_new @ (x - x_new)) >= gnorm_new**2 / (4 * lam)
        if ok:
            gamma = max(2 * gamma, opts.gamma_min)
            return _SearchOut(x_new, f_new, g_new, gnorm_new, gamma, lam, trial, True, step)
        gamma /= 2
        last = _SearchOut(x_new, f_new, g_new, gnorm_new, gamma, lam, trial, False, step)
    if last is None:
        if n_nonfinite:
            raise FloatingPointError(
                f"loss: every one of {opts.max_search} trial points gave a non-finite loss or "
                f"gradient (last λ = {lam:.3g}); no step was taken"
            )
        raise RuntimeError(
            f"hessian: H + λB was not positive definite in {n_failed} trials up to λ = {lam:.3g} "
            "(singular or indefinite approximation without enough regularization); use a PSD "
            "approximation, set lambda_min > 0 or raise max_search"
        )
    return last


def _validated_hessian(
    hess: Tensor | RankOne | HessianOperator, dim: int, opts: _Options
) -> Tensor | RankOne | HessianOperator:
    """Check what an approximation returned, and adapt it to the chosen solver."""
    if isinstance(hess, RankOne):
        if hess.u.shape != (dim,) or not torch.isfinite(hess.u).all():
            raise ValueError(f"hessian: rank-one factor must be a finite ({dim},) vector")
        if not math.isfinite(float(hess.alpha)) or float(hess.alpha) < 0:
            raise ValueError(f"hessian: rank-one weight must be finite and >= 0, got {hess.alpha}")
        if opts.solver == "cg":
            return HessianOperator(lambda v: hess.alpha * hess.u * (hess.u @ v), dim)
        return hess
    if isinstance(hess, HessianOperator):
        if opts.solver not in ("cg", "auto"):
            raise ValueError(
                f"solver: a matrix-free hessian needs solver='cg', not {opts.solver!r}"
            )
        return hess
    if not isinstance(hess, Tensor):
        raise TypeError(f"hessian must produce a tensor, got {type(hess).__name__}")
    if hess.shape != (dim, dim):
        raise ValueError(f"hessian must be a ({dim}, {dim}) matrix, got {tuple(hess.shape)}")
    if not torch.isfinite(hess).all():
        raise ValueError("hessian contains non-finite values (NaN or inf)")
    if opts.solver == "sherman_morrison":
        raise ValueError("solver: 'sherman_morrison' needs a rank-one hessian (e.g. FisherTerm)")
    if opts.solver == "cg":
        return HessianOperator(lambda v: hess @ v, dim)
    return hess


def _is_rank_one_approx(approx: Any) -> bool:
    return isinstance(approx, FisherTerm | ZeroHessian)
