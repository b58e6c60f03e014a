"""Ask/tell plumbing of direct-search methods: budgets, evaluation cache, results.

Black-box optimizers here follow nevergrad's convention: the evaluation budget is the
first-class stopping rule. :class:`DirectSearchBase` turns an algorithm written as a coroutine
(``value = yield from self._evaluate(y)``) into an ask/tell object with ``minimize(fn)``:

* each distinct evaluated point costs one evaluation; values are cached by the bytes of ``x``,
  so re-visited points are free;
* points outside ``bounds`` are rejected without evaluation (extreme barrier on the box);
* the run stops when the algorithm converges or the :class:`Budget` (evaluations, seconds,
  iterations) is spent; :class:`OptimResult` records every value and a per-iteration trace.

Used by :class:`~optforge.dfo.CDSM` (covering direct search, Audet, Bouchet, Bourdin, arXiv
2401.07097) and the directional-attack hybrid of Bouchet & Vidal (arXiv 2510.01461).

Example::

    opt = CDSM(torch.zeros(2), budget=Budget(max_evals=300, max_time_s=5.0), generator=0)
    while (x := opt.ask()) is not None:
        opt.tell(x, float(((x - 0.3) ** 2).sum()))
    result = opt.result()          # an OptimResult
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from optforge._core import check_positive_int, make_generator

__all__ = [
    "Budget",
    "DirectSearchBase",
    "OptimResult",
    "as_budget",
    "as_generator",
    "check_x0",
]

Bounds = tuple[torch.Tensor | float, torch.Tensor | float]


@dataclass(frozen=True)
class Budget:
    """Stopping rule of a black-box run; the evaluation count is the first-class one.

    Attributes:
        max_evals: Maximum number of (distinct, counted) evaluations.
        max_time_s: Wall-clock limit in seconds.
        max_iters: Maximum number of iterations (``None``: unlimited).
    """

    max_evals: int = 20_000
    max_time_s: float = math.inf
    max_iters: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("budget", self.max_evals)
        if not (isinstance(self.max_time_s, (int, float)) and self.max_time_s > 0):
            raise ValueError(f"max_time_s must be > 0, got {self.max_time_s!r}")
        if self.max_iters is not None:
            check_positive_int("max_iters", self.max_iters)


@dataclass
class OptimResult:
    """Outcome of a run.

    Attributes:
        x_best: Best point found (1-D tensor).
        f_best: Its objective value, in the sense of the problem (``sense``).
        n_evals: Number of counted evaluations.
        n_iters: Number of completed iterations.
        stop_reason: ``"r_min"``, ``"budget"``, ``"time"``, ``"iters"`` or ``"converged"``.
        sense: ``"min"`` or ``"max"``.
        values: Objective value of every counted evaluation, in order (problem sense).
        trace: One dict per iteration: ``k``, ``f``, ``n_evals``, ``time``, ``status``, radii.
    """

    x_best: torch.Tensor
    f_best: float
    n_evals: int
    n_iters: int
    stop_reason: str
    sense: str = "min"
    values: list[float] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)

    def best_curve(self) -> list[float]:
        """Best value so far after each evaluation (problem sense)."""
        out: list[float] = []
        best = math.inf if self.sense == "min" else -math.inf
        for v in self.values:
            best = min(best, v) if self.sense == "min" else max(best, v)
            out.append(best)
        return out


class DirectSearchBase(ABC):
    """Ask/tell plumbing shared by cDSM and the hybrid: caching, counting, budget, trace.

    Subclasses write the algorithm as a coroutine ``_iteration()`` that obtains values with
    ``value = yield from self._evaluate(y)``; minimisation of ``F`` throughout.
    """

    def __init__(
        self,
        x0: torch.Tensor,
        *,
        bounds: Bounds | None = None,
        budget: int | Budget = 1000,
        generator: torch.Generator | int | None = None,
        nonfinite: Literal["reject", "raise"] = "reject",
    ) -> None:
        self.x0, self.bounds = check_x0(x0, bounds)
        self.budget = as_budget(budget)
        if nonfinite not in ("reject", "raise"):
            raise ValueError(f"nonfinite must be 'reject' or 'raise', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.generator = as_generator(generator)
        self.n = self.x0.numel()
        self.x = self.x0.clone()
        self.fx = math.inf
        self.n_evals = 0
        self.n_iters = 0
        self.stop_reason: str | None = None
        self.values: list[float] = []
        self.trace: list[dict[str, Any]] = []
        self._cache: dict[bytes, float] = {}
        self._points: list[torch.Tensor] = []
        self._start = time.perf_counter()
        self._warned = False
        self._coroutine = self._main()
        self._pending: torch.Tensor | None = self._send(None)

    # ----------------------------------------------------------------- public ask/tell API
    @property
    def done(self) -> bool:
        """Whether the run has stopped (``stop_reason`` says why)."""
        return self._pending is None

    @property
    def x_best(self) -> torch.Tensor:
        """The incumbent (best point so far)."""
        return self.x.clone()

    @property
    def f_best(self) -> float:
        """The incumbent's value (minimisation sense)."""
        return self.fx

    def ask(self) -> torch.Tensor | None:
        """The next point to evaluate, or ``None`` once the run has stopped."""
        return None if self._pending is None else self._pending.clone()

    def tell(self, x: torch.Tensor, value: float) -> None:
        """Report ``value = F(x)`` for the point last returned by :meth:`ask`."""
        if self._pending is None:
            raise RuntimeError(f"the run has stopped ({self.stop_reason}); nothing to tell")
        if not isinstance(x, torch.Tensor) or not torch.equal(x.to(self._pending), self._pending):
            raise ValueError("x must be the point returned by the last ask()")
        self._pending = self._send(float(value))

    def minimize(self, fn: Callable[[torch.Tensor], float]) -> OptimResult:
        """Drive ask/tell with ``fn`` until the stopping rule fires."""
        while (x := self.ask()) is not None:
            self.tell(x, _to_float(fn(x)))
        return self.result()

    def result(self, sense: str = "min") -> OptimResult:
        """The run's :class:`OptimResult` (``sense="max"`` negates values back)."""
        sign = -1.0 if sense == "max" else 1.0
        trace = [{**t, "f": sign * t["f"]} for t in self.trace]
        return OptimResult(
            x_best=self.x.clone(),
            f_best=sign * self.fx,
            n_evals=self.n_evals,
            n_iters=self.n_iters,
            stop_reason=self.stop_reason or "running",
            sense=sense,
            values=[sign * v for v in self.values],
            trace=trace,
        )

    # ----------------------------------------------------------------- internals
    def _send(self, value: float | None) -> torch.Tensor | None:
        try:
            return self._coroutine.send(value)
        except StopIteration:
            return None

    def _main(self) -> Generator[torch.Tensor, float, None]:
        try:
            self.fx = yield from self._evaluate(self.x0, first=True)
            while True:
                if self.budget.max_iters is not None and self.n_iters >= self.budget.max_iters:
                    raise _Stop("iters")
                status = yield from self._iteration()
                self.n_iters += 1
                self.trace.append(
                    {
                        "k": self.n_iters,
                        "f": self.fx,
                        "n_evals": self.n_evals,
                        "time": time.perf_counter() - self._start,
                        "status": status,
                        **self._radii(),
                    }
                )
                if self._converged():
                    raise _Stop(self._converged_reason)
        except _Stop as stop:
            self.stop_reason = str(stop)

    _converged_reason = "r_min"

    @abstractmethod
    def _iteration(self) -> Generator[torch.Tensor, float, str]:
        """One iteration as a generator: yields points to evaluate, receives their values."""

    def _converged(self) -> bool:
        return False

    def _radii(self) -> dict[str, float]:
        return {}

    def _in_bounds(self, y: torch.Tensor) -> bool:
        if self.bounds is None:
            return True
        lo, hi = self.bounds
        return bool(((y >= lo) & (y <= hi)).all())

    def _evaluate(
        self, y: torch.Tensor, first: bool = False
    ) -> Generator[torch.Tensor, float, float]:
        """Value of ``y``: cached, ``inf`` outside the bounds, else asked (and counted)."""
        y = y.to(self.x0)
        if not self._in_bounds(y):
            return math.inf
        key = y.detach().cpu().numpy().tobytes()
        if key in self._cache:
            return self._cache[key]
        if self.n_evals >= self.budget.max_evals:
            raise _Stop("budget")
        if time.perf_counter() - self._start >= self.budget.max_time_s:
            raise _Stop("time")
        value = yield y
        if first and not math.isfinite(value):
            raise ValueError(f"the objective at x0 is not finite ({value}); check fn/phi")
        if math.isnan(value) or value == -math.inf:  # +inf is a legitimate barrier value
            if self.nonfinite == "raise":
                raise ValueError(f"the objective returned a non-finite value ({value})")
            if not self._warned:
                warnings.warn(
                    "the objective returned a non-finite value; treated as a failed trial point",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
            value = math.inf
        self._cache[key] = value
        self._points.append(y.detach().clone())
        self.n_evals += 1
        self.values.append(value)
        return value


class _Stop(Exception):
    """Raised inside the search coroutine to end the run with a reason."""


def as_budget(budget: int | Budget) -> Budget:
    """Accept an int (evaluations) or a :class:`Budget`."""
    if isinstance(budget, Budget):
        return budget
    return Budget(max_evals=check_positive_int("budget", budget))


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A dedicated CPU generator from a generator, a seed or ``None``."""
    if isinstance(generator, torch.Generator):
        return generator
    return make_generator(generator)


def check_x0(x0: Any, bounds: Bounds | None) -> tuple[torch.Tensor, tuple | None]:
    """Validate ``x0`` (1-D, finite, floating, inside ``bounds``) and broadcast the bounds."""
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if x0.dim() != 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D tensor, got shape {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains non-finite values (NaN or inf)")
    x0 = x0.detach().clone()
    if bounds is None:
        return x0, None
    if not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    lo = torch.as_tensor(bounds[0], dtype=x0.dtype, device=x0.device).expand_as(x0).clone()
    hi = torch.as_tensor(bounds[1], dtype=x0.dtype, device=x0.device).expand_as(x0).clone()
    if torch.isnan(lo).any() or torch.isnan(hi).any() or (lo > hi).any():
        raise ValueError("bounds must satisfy lower <= upper elementwise (no NaN)")
    if ((x0 < lo) | (x0 > hi)).any():
        raise ValueError("x0 lies outside bounds")
    return x0, (lo, hi)


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"fn must return a scalar, got shape {tuple(value.shape)}")
        return float(value.detach())
    return float(value)
