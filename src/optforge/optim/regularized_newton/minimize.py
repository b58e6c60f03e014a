r"""Functional full-batch solver: :func:`gns_minimize` (Algorithm 1) and its :class:`GNSResult`.

``fun(x) -> scalar`` on a flat tensor; derivatives by ``torch.func`` (``grad_and_value``,
``hessian``, ``jvp``). Each outer iteration computes ``H(x)`` once and runs the adaptive search
over γ of :mod:`.search`; the result carries counters and a per-iteration history.

Example::

    A, b = torch.randn(200, 100, dtype=torch.float64), torch.randn(200, dtype=torch.float64)
    f = lambda x: 0.25 * torch.logsumexp((A @ x - b) / 0.25, dim=0)
    res = gns_minimize(f, torch.ones(100, dtype=torch.float64),
                       hessian=WeightedGaussNewtonLSE(A, b, 0.25), gtol=1e-9)
    res.x, res.nit, res.status
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_not_meta, check_positive_int
from optforge.optim.regularized_newton.search import _Options, _search, _validated_hessian
from optforge.optim.regularized_newton.step import Solver

__all__ = ["GNSResult", "gns_minimize"]


@dataclass
class GNSResult:
    """Outcome of :func:`gns_minimize`.

    ``status`` is ``"ftol"`` (f − f* ≤ ftol), ``"gtol"`` (‖∇f‖_* ≤ gtol), ``"maxiter"``,
    ``"search_exhausted"`` (with ``on_exhausted="stop"``) or ``"callback"``. ``history`` holds
    one entry per iterate (the start included): ``f``, ``grad_norm``, ``gamma`` (after the
    update), ``lam`` (of the accepted step), ``trials``, ``nfev``, ``time``.
    """

    x: Tensor
    fun: float
    grad_norm: float
    nit: int
    nfev: int
    ngev: int
    nhev: int
    nfactor: int
    n_exhausted: int
    status: str
    gamma: float
    history: dict[str, list[float]] = field(default_factory=dict)


def gns_minimize(
    fun: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    hessian: Any = "exact",
    metric: Tensor | None = None,
    gamma0: float = 1.0,
    gamma_min: float = 1e-9,
    lambda_eps: float = 1e-8,
    lambda_min: float = 0.0,
    max_search: int = 40,
    acceptance: Literal["func", "grad"] = "func",
    maxiter: int = 1000,
    ftol: float | None = None,
    f_star: float | None = None,
    gtol: float | None = None,
    solver: Solver = "auto",
    cg_tol: float = 1e-10,
    cg_maxiter: int | None = None,
    max_dense_dim: int = 20_000,
    on_exhausted: Literal["accept", "stop"] = "accept",
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
) -> GNSResult:
    """Minimise ``fun`` from ``x0`` with Algorithm 1 (gradient-regularized Newton, adaptive γ).

    Args:
        fun: ``fun(x) -> scalar tensor``, differentiable by ``torch.func``; deterministic.
        x0: starting point, a 1-D floating tensor (float64 recommended).
        hessian: ``"exact"`` (``torch.func.hessian``), ``"exact-hvp"`` (matrix-free, use
            ``solver="cg"``), ``"zero"`` (adaptive gradient method), a constant ``(d, d)``
            tensor, a callable ``x -> (d, d)`` or a
            :class:`~optforge.optim.regularized_newton.hessian_approx.HessianApprox`.
        metric: SPD ``B`` defining the norms (default identity).
        gamma0: initial γ.
        gamma_min: floor of γ after an accepted step.
        lambda_eps: guard in ``λ = ‖g‖_*/(γ + lambda_eps)``.
        lambda_min: floor of λ.
        max_search: trials per outer iteration.
        acceptance: ``"func"`` (Algorithm 1) or ``"grad"`` (Super-Universal-Newton-type test).
        maxiter: outer iterations.
        ftol: stop when ``f − f_star <= ftol`` (needs ``f_star``).
        f_star: the optimal value, for ``ftol``.
        gtol: stop when ``‖∇f‖_* <= gtol`` (default: only the exact zero gradient).
        solver: ``"auto"``, ``"cholesky"``, ``"cg"`` or ``"sherman_morrison"``.
        cg_tol: CG tolerance (relative residual).
        cg_maxiter: CG iteration cap.
        max_dense_dim: largest ``d`` a dense (d, d) Hessian is formed for.
        on_exhausted: after ``max_search`` rejections take the last trial (``"accept"``, as the
            reference code, counted) or stop (``"stop"``).
        callback: ``callback(info)`` after every outer iteration with keys ``k, x, f, f_prev,
            grad_norm, grad_norm_prev, lam, gamma, trials, accepted, step``; return ``True``
            to stop.

    Returns:
        :class:`GNSResult`.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim != 1:
        raise ValueError("x0 must be a 1-D floating-point tensor")
    check_not_meta("x0", x0)
    if x0.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(f"x0 must be float32 or float64 (the linear algebra), got {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains non-finite values (NaN or inf)")
    if (ftol is None) != (f_star is None):
        raise ValueError("ftol and f_star must be given together")
    if ftol is not None:
        check_nonnegative("ftol", ftol)
    if gtol is not None:
        check_nonnegative("gtol", gtol)
    maxiter = check_positive_int("maxiter", maxiter) if maxiter != 0 else 0
    opts = _Options.build(
        hessian=hessian,
        metric=metric,
        gamma0=gamma0,
        gamma_min=gamma_min,
        lambda_eps=lambda_eps,
        lambda_min=lambda_min,
        max_search=max_search,
        acceptance=acceptance,
        solver=solver,
        cg_tol=cg_tol,
        cg_maxiter=cg_maxiter,
        max_dense_dim=max_dense_dim,
        on_exhausted=on_exhausted,
        dim=x0.numel(),
        dtype=x0.dtype,
        device=x0.device,
    )
    counters = {"nfev": 0, "ngev": 0, "nhev": 0, "nfactor": 0}
    grad_and_value = torch.func.grad_and_value(fun)

    def evaluate(x: Tensor) -> tuple[float, Tensor]:
        try:
            g, f = grad_and_value(x)
        except RuntimeError as err:
            if "scalar" in str(err):
                raise ValueError(f"fun must return a scalar tensor: {err}") from err
            raise
        counters["nfev"] += 1
        counters["ngev"] += 1
        if f.numel() != 1:
            raise ValueError(f"fun must return a scalar, got shape {tuple(f.shape)}")
        return float(f), g.detach()

    x = x0.detach().clone()
    f, g = evaluate(x)
    if not math.isfinite(f):
        raise ValueError(f"fun(x0) is not finite ({f})")
    gnorm = opts.metric.dual_norm(g)
    if not math.isfinite(gnorm):
        raise ValueError(f"fun: non-finite gradient (NaN or inf) at x0, where fun(x0) = {f}")
    gamma = float(opts.gamma0)
    start = time.perf_counter()
    history: dict[str, list[float]] = {
        "f": [f], "grad_norm": [gnorm], "gamma": [gamma], "lam": [math.nan],
        "trials": [0], "nfev": [counters["nfev"]], "time": [0.0],
    }  # fmt: skip
    status, n_exhausted, k = "maxiter", 0, 0
    for k in range(maxiter + 1):
        if f_star is not None and ftol is not None and f - f_star <= ftol:
            status = "ftol"
            break
        if gnorm <= (gtol if gtol is not None else 0.0):
            status = "gtol"
            break
        if k == maxiter:
            break
        oracle = _FunctionalOracle(fun, x)
        hess = _validated_hessian(opts.hessian(x, oracle), x.numel(), opts)
        counters["nhev"] += 1
        out = _search(x, f, g, gnorm, gamma, hess, evaluate, opts, counters)
        n_exhausted += not out.accepted
        info = {
            "k": k, "x": out.x, "f": out.f, "f_prev": f, "grad_norm": out.gnorm,
            "grad_norm_prev": gnorm, "lam": out.lam, "gamma": out.gamma,
            "trials": out.trials, "accepted": out.accepted, "step": out.step,
        }  # fmt: skip
        x, f, g, gnorm, gamma = out.x, out.f, out.g, out.gnorm, out.gamma
        for key, value in (
            ("f", f), ("grad_norm", gnorm), ("gamma", gamma), ("lam", out.lam),
            ("trials", out.trials), ("nfev", counters["nfev"]),
            ("time", time.perf_counter() - start),
        ):  # fmt: skip
            history[key].append(value)
        if callback is not None and callback(info):
            status = "callback"
            k += 1
            break
        if not out.accepted and opts.on_exhausted == "stop":
            status = "search_exhausted"
            k += 1
            break
    return GNSResult(
        x=x, fun=f, grad_norm=gnorm, nit=k, n_exhausted=n_exhausted, status=status,
        gamma=gamma, history=history, **counters,
    )  # fmt: skip


class _FunctionalOracle:
    """Exact curvature of ``fun`` at ``x`` by ``torch.func`` (dense Hessian or HVPs)."""

    def __init__(self, fun: Callable[[Tensor], Tensor], x: Tensor) -> None:
        self.fun, self.x = fun, x

    def hessian(self) -> Tensor:
        return torch.func.hessian(self.fun)(self.x)

    def hvp(self, v: Tensor) -> Tensor:
        return torch.func.jvp(torch.func.grad(self.fun), (self.x,), (v,))[1]
