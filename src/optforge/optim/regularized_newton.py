r"""Gradient-regularized Newton with approximate Hessians (gradient-normalized smoothness).

Paper: Andrei Semenov, Martin Jaggi, Nikita Doikov, "Gradient-Normalized Smoothness for
Optimization with Approximate Hessians", arXiv:2506.13710 (2025). Official code:
github.com/epfml/grad-norm-smooth (NumPy; ``src/methods.py``, "Algorithm 1").

Given an approximation ``H(x)`` of the Hessian (exact, lazy, subsampled, a fixed bound,
Gauss–Newton, Fisher, ... — see :mod:`optforge.optim.hessian_approx`) and a fixed SPD metric
``B`` (identity by default) with norms ``‖h‖ = (hᵀBh)^{1/2}`` and ``‖g‖_* = (gᵀB⁻¹g)^{1/2}``,
one outer iteration is

.. math::

    λ = \max\Big(\frac{‖∇f(x)‖_*}{γ + ε},\ λ_{\min}\Big),\qquad
    x^+ = x − (H(x) + λB)^{-1}∇f(x),

accepted when ``f(x) − f(x⁺) ≥ ‖∇f(x⁺)‖_*² / (8λ)`` (``acceptance="func"``, Algorithm 1) or
``⟨∇f(x⁺), x − x⁺⟩ ≥ ‖∇f(x⁺)‖_*² / (4λ)`` (``acceptance="grad"``). On acceptance
``γ ← max(2γ, γ_min)``; on rejection ``γ ← γ/2`` and the trial is repeated (at most
``max_search`` trials, ``H(x)`` computed once per outer iteration). ``γ`` estimates the paper's
gradient-normalized smoothness, the radius on which the model ``∇f(x) + H(x)(y − x)`` predicts
``∇f(y)`` to a fraction of ``‖∇f(x)‖_*``; the error of ``H`` only enters through it, so
approximate Hessians keep fast global rates (linear for logistic / softmax regression).

Two layers:

* :func:`gns_minimize` — functional full-batch solver ``fun(x) -> scalar`` on a flat tensor,
  derivatives by ``torch.func`` (``grad_and_value``, ``hessian``, ``jvp``); returns a
  :class:`GNSResult` with counters and a per-iteration history.
* :class:`GradNormSmoothNewton` — the ``torch.optim`` form; ``step(closure)`` does one outer
  iteration over all parameters flattened into one vector (a dense method for ``d`` up to a few
  thousand; ``solver="cg"`` with ``hessian="exact-hvp"`` for more).

Solvers: ``"cholesky"`` (``torch.linalg.cholesky_ex`` on ``H + λB``, checking ``info``),
``"cg"`` (conjugate gradients on ``v ↦ Hv + λBv``, matrix-free), ``"sherman_morrison"`` (for a
rank-one ``H = αuuᵀ``, e.g. :class:`~optforge.optim.hessian_approx.FisherTerm`), ``"auto"``
(Sherman–Morrison for rank one, CG for operators, Cholesky otherwise).

Example::

    A, b = torch.randn(200, 100, dtype=torch.float64), torch.randn(200, dtype=torch.float64)
    f = lambda x: 0.25 * torch.logsumexp((A @ x - b) / 0.25, dim=0)
    res = gns_minimize(f, torch.ones(100, dtype=torch.float64),
                       hessian=WeightedGaussNewtonLSE(A, b, 0.25), gtol=1e-9)
    res.x, res.nit, res.status

    model = torch.nn.Linear(5, 1).double()
    opt = GradNormSmoothNewton(model.parameters(), hessian="exact")
    def closure():                      # returns the loss; no backward needed
        return torch.nn.functional.mse_loss(model(X), y)
    for _ in range(20):
        opt.step(closure)

Choices where the spec marked the reference code as unsafe or silent (spec §3.3, §8):

* ``eps`` of the reference code is split into ``lambda_eps`` (guard in λ) and ``ftol``.
* A failed factorisation (``H + λB`` not PD, possible for indefinite ``H``) or a non-finite
  trial loss is a rejected trial (``γ ← γ/2``); if every trial fails that way, no step is taken
  and ``RuntimeError`` / ``FloatingPointError`` is raised with the diagnostics.
* After ``max_search`` rejected-but-valid trials the reference code takes the last trial
  silently; here it is taken too (``on_exhausted="accept"``) but counted
  (``GNSResult.n_exhausted``), or stops with ``status="search_exhausted"``
  (``on_exhausted="stop"``).
* ``lambda_min`` (default 0) floors λ, for singular approximations near a stationary point.
* The optimizer computes in at least float32 (bfloat16/float16 parameters are upcast for the
  linear algebra); float64 is recommended for gaps below 1e-7.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive, check_positive_int
from optforge.optim.hessian_approx import (
    HessianOperator,
    RankOne,
    as_hessian_approx,
)

__all__ = ["GNSResult", "GradNormSmoothNewton", "gns_minimize", "regularized_newton_step"]

Solver = Literal["auto", "cholesky", "cg", "sherman_morrison"]
_SOLVERS = ("auto", "cholesky", "cg", "sherman_morrison")


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


# ---------------------------------------------------------------------------------------------
# Public single-step helper (also the formula the tests check)


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
    m = _Metric(metric, grad.numel(), grad.dtype, grad.device)
    step, ok = _Solve(hessian, m, _check_solver(solver), cg_tol, cg_maxiter)(grad, float(lam))
    if not ok:
        raise RuntimeError("H + λB is not positive definite; increase lam")
    return step


# ---------------------------------------------------------------------------------------------
# Functional solver


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
            :class:`~optforge.optim.hessian_approx.HessianApprox`.
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


# ---------------------------------------------------------------------------------------------
# torch.optim form


class GradNormSmoothNewton(torch.optim.Optimizer):
    """Gradient-regularized Newton with adaptive γ as a ``torch.optim`` optimizer.

    Each ``step(closure)`` is one outer iteration of Algorithm 1 over all parameters flattened
    into one vector (in ``param_groups`` order). ``closure()`` must re-evaluate the full-batch
    loss deterministically and return it; it is called up to ``max_search + 1`` times per step
    (like ``torch.optim.LBFGS``). The optimizer differentiates the returned loss itself with
    ``torch.autograd.grad``; a closure that calls ``loss.backward()`` (LBFGS style) works with
    Hessians that do not need second derivatives of the closure (``"zero"``, a fixed matrix, an
    approximation of ``x``), since then the gradient is read from ``.grad``.

    Hessian approximations receive the flat parameter vector ``x``; ``"exact"`` is formed by
    batched double backward through the closure's graph. There is no learning rate, so LR
    schedulers do not apply (passing ``lr`` raises). All param groups must share the same
    hyper-parameters (one joint Newton system); like LBFGS, the method is full-batch.

    Args:
        params: parameters or param groups.
        hessian: as in :func:`gns_minimize` (likewise ``metric``, ``gamma0``, ``gamma_min``,
            ``lambda_eps``, ``lambda_min``, ``max_search``, ``acceptance``, ``solver``,
            ``cg_tol``, ``cg_maxiter``, ``max_dense_dim`` and ``on_exhausted``).
        gtol: a step with ``‖∇f‖_* <= gtol`` does nothing (like LBFGS's ``tolerance_grad``):
            at the optimum the acceptance test only compares rounding errors, and every step
            would exhaust ``max_search`` closure calls. Raise it for float32 losses (~1e-6).

    ``state_dict`` stores γ, the step count, the counters (``nfev``, ``ngev``, ``nhev``,
    ``nfactor``, ``n_exhausted``) and the state of a stateful approximation (lazy cache,
    subsample) so a reloaded optimizer continues bit-identically.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        hessian: Any = "exact",
        metric: Tensor | None = None,
        gamma0: float = 1.0,
        gamma_min: float = 1e-9,
        lambda_eps: float = 1e-8,
        lambda_min: float = 0.0,
        max_search: int = 40,
        acceptance: Literal["func", "grad"] = "func",
        solver: Solver = "auto",
        cg_tol: float = 1e-10,
        cg_maxiter: int | None = None,
        max_dense_dim: int = 20_000,
        on_exhausted: Literal["accept", "stop"] = "accept",
        gtol: float = 1e-10,
        **kwargs: Any,
    ) -> None:
        if "lr" in kwargs:
            raise ValueError("lr: GradNormSmoothNewton has no learning rate (λ is adaptive)")
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        defaults = {
            "gamma0": gamma0, "gamma_min": gamma_min, "lambda_eps": lambda_eps,
            "lambda_min": lambda_min, "max_search": max_search, "acceptance": acceptance,
            "solver": solver, "cg_tol": cg_tol, "cg_maxiter": cg_maxiter,
            "max_dense_dim": max_dense_dim, "on_exhausted": on_exhausted,
        }  # fmt: skip
        _Options.validate(**defaults)
        self.gtol = float(check_nonnegative("gtol", gtol))
        self.hessian = as_hessian_approx(hessian)
        self.metric = metric
        super().__init__(params, defaults)
        first = self.param_groups[0]
        for group in self.param_groups[1:]:
            for key in defaults:
                if group[key] != first[key]:
                    raise ValueError(
                        f"{key}: all param groups must share hyper-parameters "
                        "(GradNormSmoothNewton solves one joint Newton system)"
                    )
        self._params = [p for group in self.param_groups for p in group["params"]]
        dim = sum(p.numel() for p in self._params)
        self._dtype = torch.promote_types(self._params[0].dtype, torch.float32)
        self._opts = _Options.build(
            hessian=self.hessian, metric=metric, dim=dim, dtype=self._dtype,
            device=self._params[0].device, **defaults,
        )  # fmt: skip

    # -- state -------------------------------------------------------------------------------
    def _global_state(self) -> dict[str, Any]:
        state = self.state[self._params[0]]
        if "gamma" not in state:
            state.update(
                gamma=float(self._opts.gamma0), step=0, nfev=0, ngev=0, nhev=0, nfactor=0,
                n_exhausted=0,
            )  # fmt: skip
        return state

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        if hasattr(self.hessian, "state_dict"):
            sd["hessian_state"] = self.hessian.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        hessian_state = state_dict.pop("hessian_state", None)
        super().load_state_dict(state_dict)
        if hessian_state is not None and hasattr(self.hessian, "load_state_dict"):
            self.hessian.load_state_dict(hessian_state)

    # -- helpers ------------------------------------------------------------------------------
    def _flat(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1).to(self._dtype) for p in self._params])

    def _write(self, x: Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self._params:
                n = p.numel()
                p.copy_(x[offset : offset + n].view_as(p))
                offset += n

    def _evaluate(
        self, closure: Callable[[], Tensor], create_graph: bool, counters: dict[str, Any]
    ) -> tuple[Tensor, float, Tensor, tuple[Tensor, ...] | None]:
        with torch.enable_grad():
            return self._evaluate_with_grad(closure, create_graph, counters)

    def _evaluate_with_grad(
        self, closure: Callable[[], Tensor], create_graph: bool, counters: dict[str, Any]
    ) -> tuple[Tensor, float, Tensor, tuple[Tensor, ...] | None]:
        loss = closure()
        counters["nfev"] += 1
        counters["ngev"] += 1
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"closure must return a scalar tensor loss, got {loss!r}")
        f = float(loss.detach())
        if not math.isfinite(f):  # a rejected trial (or an error at the start of the step)
            dim = sum(p.numel() for p in self._params)
            nan = torch.full((dim,), math.nan, dtype=self._dtype, device=self._params[0].device)
            return loss, f, nan, None
        grads: tuple[Tensor | None, ...] | None = None
        if loss.requires_grad:
            try:
                grads = torch.autograd.grad(
                    loss, self._params, create_graph=create_graph, allow_unused=True
                )
            except RuntimeError:
                grads = None  # the closure already called backward(): read .grad
        if grads is None:
            if create_graph:
                raise ValueError(
                    "closure: hessian='exact' needs the loss's autograd graph; return the loss "
                    "without calling loss.backward() inside the closure"
                )
            grads = tuple(p.grad for p in self._params)
        flat = [
            torch.zeros(p.numel(), dtype=self._dtype, device=p.device)
            if gi is None
            else gi.reshape(-1).to(self._dtype)
            for p, gi in zip(self._params, grads, strict=True)
        ]
        g = torch.cat(flat)
        graph = tuple(flat) if create_graph else None
        return loss, f, (g.detach() if not create_graph else g), graph

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One outer iteration; returns the loss at the starting point (as LBFGS does)."""
        if closure is None or not callable(closure):
            raise ValueError(
                "closure: GradNormSmoothNewton needs a closure that re-evaluates the loss"
            )
        state = self._global_state()
        opts = self._opts
        needs_graph = _needs_graph(self.hessian)
        counters = {k: state[k] for k in ("nfev", "ngev", "nhev", "nfactor")}
        x = self._flat()
        loss, f, g, _ = self._evaluate(closure, needs_graph, counters)
        if not math.isfinite(f):
            raise ValueError(f"closure returned a non-finite loss ({f}) at the current point")
        oracle = _ClosureOracle(g, self._params, self._dtype) if needs_graph else _NoOracle()
        g = g.detach()
        gnorm = opts.metric.dual_norm(g)
        if gnorm <= self.gtol:  # converged: no search (it would only fight rounding)
            return loss.detach()
        hess = _validated_hessian(self.hessian(x, oracle), x.numel(), opts)
        counters["nhev"] += 1

        def evaluate(x_new: Tensor) -> tuple[float, Tensor]:
            self._write(x_new)
            _, f_new, g_new, _ = self._evaluate(closure, False, counters)
            return f_new, g_new

        try:
            out = _search(
                x, f, g, gnorm, state["gamma"], hess, evaluate, opts, counters, self._flat
            )
        except BaseException:
            self._write(x)  # leave the parameters where the step started
            raise
        if not torch.equal(self._flat(), out.x):
            self._write(out.x)  # the last trial evaluated is not the step taken
        state.update(counters)
        state["gamma"] = out.gamma
        state["step"] += 1
        state["n_exhausted"] += not out.accepted
        state["last_lam"], state["last_trials"] = out.lam, out.trials
        return loss.detach()


# ---------------------------------------------------------------------------------------------
# Private helpers: options, metric, oracles, solver, line search


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
        if kw["acceptance"] not in ("func", "grad"):
            raise ValueError(f"acceptance must be 'func' or 'grad', got {kw['acceptance']!r}")
        if kw["on_exhausted"] not in ("accept", "stop"):
            raise ValueError(f"on_exhausted must be 'accept' or 'stop', got {kw['on_exhausted']!r}")
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


def _is_rank_one_approx(approx: Any) -> bool:
    from optforge.optim.hessian_approx import FisherTerm, ZeroHessian

    return isinstance(approx, FisherTerm | ZeroHessian)


def _needs_graph(approx: Any) -> bool:
    from optforge.optim.hessian_approx import ExactHessian, LazyHessian

    if isinstance(approx, LazyHessian):
        return _needs_graph(approx.base)
    return isinstance(approx, ExactHessian)


def _check_solver(solver: str) -> str:
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    return solver


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


class _FunctionalOracle:
    def __init__(self, fun: Callable[[Tensor], Tensor], x: Tensor) -> None:
        self.fun, self.x = fun, x

    def hessian(self) -> Tensor:
        return torch.func.hessian(self.fun)(self.x)

    def hvp(self, v: Tensor) -> Tensor:
        return torch.func.jvp(torch.func.grad(self.fun), (self.x,), (v,))[1]


class _ClosureOracle:
    """Exact curvature from the graph of ``g = ∇f`` built with ``create_graph=True``."""

    def __init__(self, g: Tensor, params: list[Tensor], dtype: torch.dtype) -> None:
        self.g, self.params, self.dtype = g, params, dtype

    def _vjp(self, v: Tensor, batched: bool) -> Tensor:
        dim = self.g.numel()
        if not self.g.requires_grad:  # the gradient does not depend on the parameters
            return torch.zeros(v.shape, dtype=self.dtype, device=v.device)
        with torch.enable_grad():
            rows = torch.autograd.grad(
                self.g, self.params, grad_outputs=v, retain_graph=True, allow_unused=True,
                is_grads_batched=batched,
            )  # fmt: skip
        lead = (v.shape[0],) if batched else ()
        parts = [
            torch.zeros((*lead, p.numel()), dtype=self.dtype, device=v.device)
            if r is None
            else r.reshape(*lead, p.numel()).to(self.dtype)
            for p, r in zip(self.params, rows, strict=True)
        ]
        out = torch.cat(parts, dim=-1)
        assert out.shape[-1] == dim
        return out

    def hessian(self) -> Tensor:
        eye = torch.eye(self.g.numel(), dtype=self.g.dtype, device=self.g.device)
        try:
            hess = self._vjp(eye, batched=True)
        except RuntimeError:  # an op without a batching rule: one backward per row
            hess = torch.stack([self._vjp(row, batched=False) for row in eye])
        return 0.5 * (hess + hess.T)

    def hvp(self, v: Tensor) -> Tensor:
        return self._vjp(v.to(self.g.dtype), batched=False)


class _NoOracle:
    def hessian(self) -> Tensor:
        raise RuntimeError("this approximation asked for the exact Hessian unexpectedly")

    hvp = hessian


def _validated_hessian(
    hess: Tensor | RankOne | HessianOperator, dim: int, opts: _Options
) -> Tensor | RankOne | HessianOperator:
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
