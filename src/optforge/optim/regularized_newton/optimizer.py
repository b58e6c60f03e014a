r"""The ``torch.optim`` form: :class:`GradNormSmoothNewton`.

Each ``step(closure)`` is one outer iteration of Algorithm 1 (see :mod:`.search`) over all
parameters flattened into one vector, with the same options as :func:`.gns_minimize`. It is a
dense method for ``d`` up to a few thousand; use ``solver="cg"`` with ``hessian="exact-hvp"`` for
more. The exact Hessian comes from batched double backward through the closure's graph.

The optimizer computes in at least float32 (bfloat16/float16 parameters are upcast for the
linear algebra); float64 is recommended for gaps below 1e-7.

Example::

    model = torch.nn.Linear(5, 1).double()
    opt = GradNormSmoothNewton(model.parameters(), hessian="exact")
    def closure():                      # returns the loss; no backward needed
        return torch.nn.functional.mse_loss(model(X), y)
    for _ in range(20):
        opt.step(closure)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative
from optforge._core.sharding import refuse_dtensor, refuse_dtensor_group
from optforge.optim.regularized_newton.hessian_approx import (
    ExactHessian,
    LazyHessian,
    as_hessian_approx,
)
from optforge.optim.regularized_newton.search import _Options, _search, _validated_hessian
from optforge.optim.regularized_newton.step import Solver

__all__ = ["GradNormSmoothNewton"]


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
        self._params = [p for group in self.param_groups for p in group["params"]]
        self._dtype = torch.promote_types(self._params[0].dtype, torch.float32)
        self._opts = self._build_options(self._params)

    def _build_options(self, params: list[Tensor]) -> _Options:
        return _Options.build(
            hessian=self.hessian, metric=self.metric, dim=sum(p.numel() for p in params),
            dtype=self._dtype, device=params[0].device, **self.defaults,
        )  # fmt: skip

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group (shared hyper-parameters; the joint system's size), then add it.

        All groups share one Newton system, so a group may not set its own hyper-parameters
        (other than repeating the shared ones); a group added after construction enlarges the
        system (a fixed ``metric`` of the old size then makes this raise).
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "lr" in param_group:
            raise ValueError("lr: GradNormSmoothNewton has no learning rate (λ is adaptive)")
        param_group = refuse_dtensor_group(param_group, _DTENSOR_MESSAGE)
        merged = {**self.defaults, **param_group}
        reference = self.param_groups[0] if self.param_groups else self.defaults
        for key in self.defaults:
            if merged[key] != reference[key]:
                raise ValueError(
                    f"{key}: all param groups must share hyper-parameters "
                    f"(GradNormSmoothNewton solves one joint Newton system), got {merged[key]!r} "
                    f"and {reference[key]!r}"
                )
        constructed = "_opts" in self.__dict__
        if constructed:
            new = param_group["params"]
            new = [new] if isinstance(new, Tensor) else list(new)
            param_group = {**param_group, "params": new}
            params = self._params + new
            opts = self._build_options(params)  # raises (e.g. metric of the old size) first
        super().add_param_group(param_group)
        if constructed:
            self._params, self._opts = params, opts

    # -- state -------------------------------------------------------------------------------
    def _global_state(self) -> dict[str, Any]:
        """The optimizer-wide state (a fresh one, not yet stored, before the first step)."""
        state = self.state.get(self._params[0], {})
        if "gamma" not in state:
            return dict(
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
        refuse_dtensor(self._params, _DTENSOR_MESSAGE)
        if closure is None or not callable(closure):
            raise ValueError(
                "closure: GradNormSmoothNewton needs a closure that re-evaluates the loss"
            )
        state = self._global_state()
        opts = self._opts
        needs_graph = _needs_graph(self.hessian)
        counters = {k: state[k] for k in ("nfev", "ngev", "nhev", "nfactor")}
        x = self._flat()
        # Nothing is stored until the step is taken: on any exception the parameters, the state
        # and a stateful Hessian approximation are as they were.
        restore_hessian = _snapshot_hessian(self.hessian)
        try:
            loss, f, g, _ = self._evaluate(closure, needs_graph, counters)
            if not math.isfinite(f):
                raise ValueError(f"closure returned a non-finite loss ({f}) at the current point")
            oracle = _ClosureOracle(g, self._params, self._dtype) if needs_graph else _NoOracle()
            g = g.detach()
            gnorm = opts.metric.dual_norm(g)
            if not math.isfinite(gnorm):
                raise ValueError(
                    "closure: non-finite gradient (NaN or inf) of a finite loss "
                    f"({f}) at the current point"
                )
            if gnorm <= self.gtol:  # converged: no search (it would only fight rounding)
                return loss.detach()
            hess = _validated_hessian(self.hessian(x, oracle), x.numel(), opts)
            counters["nhev"] += 1

            def evaluate(x_new: Tensor) -> tuple[float, Tensor]:
                self._write(x_new)
                _, f_new, g_new, _ = self._evaluate(closure, False, counters)
                return f_new, g_new

            out = _search(
                x, f, g, gnorm, state["gamma"], hess, evaluate, opts, counters, self._flat
            )
        except BaseException:
            self._write(x)  # leave the parameters where the step started
            restore_hessian()
            raise
        if not torch.equal(self._flat(), out.x):
            self._write(out.x)  # the last trial evaluated is not the step taken
        state = self.state[self._params[0]] = {**state}
        state.update(counters)
        state["gamma"] = out.gamma
        state["step"] += 1
        state["n_exhausted"] += not out.accepted
        state["last_lam"], state["last_trials"] = out.lam, out.trials
        return loss.detach()


# the method flattens all parameters into one vector and solves one dense Newton system (#32)
_DTENSOR_MESSAGE = (
    "GradNormSmoothNewton does not support DTensor parameters (FSDP2 fully_shard or "
    "tensor parallelism): it flattens every parameter into one vector and solves one "
    "dense Newton system, which needs the full parameters on every rank. Workaround: "
    "replicate the model (DDP or no wrapper) and have every rank evaluate the same full "
    "batch on the unwrapped module (docs/distributed.md)."
)


def _snapshot_hessian(approx: Any) -> Callable[[], None]:
    """A function that puts a stateful Hessian approximation back as it is now."""
    if isinstance(approx, LazyHessian):
        calls, cached = approx.calls, approx.cached  # replaced, never modified in place
        restore_base = _snapshot_hessian(approx.base)

        def restore() -> None:
            approx.calls, approx.cached = calls, cached
            restore_base()

        return restore
    if hasattr(approx, "state_dict") and hasattr(approx, "load_state_dict"):
        saved = approx.state_dict()
        return lambda: approx.load_state_dict(saved)
    return lambda: None


# ---------------------------------------------------------------------------------------------
# Private helpers: curvature oracles of the closure


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


def _needs_graph(approx: Any) -> bool:
    if isinstance(approx, LazyHessian):
        return _needs_graph(approx.base)
    return isinstance(approx, ExactHessian)
