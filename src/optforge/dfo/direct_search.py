"""Ask/tell plumbing of direct-search methods: batches, evaluation cache, budgets, checkpoints.

Black-box optimizers here follow nevergrad's conventions: the evaluation budget is the
first-class stopping rule, several points may be outstanding at once (evaluate them in
parallel), a point that was not asked may be told (a known good point), and the optimizer is a
plain object that pickles and has ``state_dict()``/``load_state_dict()`` (resuming is
bit-identical). :class:`DirectSearchBase` runs an algorithm written as a small state machine:

* ``_next_batch()`` returns the ordered trial points of the next step (a poll set, a covering
  point, an attack step, ...);
* the batch is *opportunistic*: it is resolved by the first point, in batch order, whose value is
  an improvement (:meth:`_accept`) once every earlier point is known, or by the last point when
  none improves; then ``_resolve(points, values, winner)`` updates the incumbent and the radii.
  Asked one at a time, the points after the winner are never evaluated (the official codes'
  opportunistic loop); asked ``k`` at a time, a batch is evaluated ``k`` points at once and the
  points told after the batch was resolved count as evaluations that improve the incumbent
  only if they beat it ("late" points);
* when every point of the current batch is outstanding, :meth:`ask` returns an extra point from
  ``_extra_point()`` (by default, around the incumbent), which keeps parallel workers busy.

Each distinct evaluated point costs one evaluation; values are cached by the bytes of ``x``
(re-visited points are free); points outside ``bounds`` get ``+inf`` without evaluation
(extreme barrier on the box). The run stops when the algorithm converges, the evaluations of the
:class:`Budget` are spent (asks stop at the budget), or its seconds or iterations are.

Used by :class:`~optforge.dfo.CDSM` (covering direct search, Audet, Bouchet, Bourdin, arXiv
2401.07097) and the directional-attack hybrid of Bouchet & Vidal (arXiv 2510.01461).

Example::

    opt = CDSM(np.zeros(2), budget=Budget(max_evals=300, max_time_s=5.0), generator=0)
    while (x := opt.ask()) is not None:
        opt.tell(x, float(((x - 0.3) ** 2).sum()))
    result = opt.result()          # an OptimResult
    state = opt.state_dict()       # or pickle.dumps(opt), at any point of the run
"""

from __future__ import annotations

import concurrent.futures
import copy
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
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

Bounds = tuple[Any, Any]
ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


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
        x_best: Best point found (1-D tensor, or a NumPy array when ``x0`` was not a tensor).
        f_best: Its objective value, in the sense of the problem (``sense``).
        n_evals: Number of counted evaluations.
        n_iters: Number of completed iterations.
        stop_reason: ``"r_min"``, ``"budget"``, ``"time"``, ``"iters"``, ``"converged"`` or
            ``"running"``.
        sense: ``"min"`` or ``"max"``.
        values: Objective value of every counted evaluation, in order (problem sense).
        trace: One dict per iteration: ``k``, ``f``, ``n_evals``, ``time``, ``status``, radii.
    """

    x_best: Any
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
    """Ask/tell plumbing shared by cDSM, the hybrid and the official baselines.

    Subclasses implement ``_next_batch() -> list[Tensor]`` and
    ``_resolve(points, values, winner) -> str | None`` (the iteration's status, or ``None`` when
    the iteration goes on with another batch); minimisation of ``F`` throughout.

    Args:
        x0: Starting point: a 1-D floating tensor, NumPy array or sequence of floats (asks are
            then NumPy arrays).
        bounds: Optional ``(lower, upper)`` box (scalars, sequences, arrays or tensors).
        budget: Number of evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None``.
        nonfinite: ``"reject"`` (NaN or ``-inf`` is a failed, counted trial; warns once) or
            ``"raise"``. ``+inf`` is the extreme-barrier value of an infeasible point.
    """

    #: attributes rebuilt from the constructor, not part of :meth:`state_dict`
    _NOT_STATE: tuple[str, ...] = ("config",)

    def __init__(
        self,
        x0: ArrayLike,
        *,
        bounds: Bounds | None = None,
        budget: int | Budget = 1000,
        generator: torch.Generator | int | None = None,
        nonfinite: Literal["reject", "raise"] = "reject",
    ) -> None:
        self._numpy_io = not isinstance(x0, torch.Tensor)
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
        self._outstanding: dict[bytes, torch.Tensor] = {}
        self._elapsed = 0.0
        self._clock = time.perf_counter()
        self._warned = False
        self._batch: list[torch.Tensor] = []
        self._batch_values: list[float | None] = []
        self._batch_asked: list[bool] = []
        self._init_done = False
        self._set_batch([self.x0.clone()])

    # ----------------------------------------------------------------- public ask/tell API
    @property
    def done(self) -> bool:
        """Whether the run has stopped (``stop_reason`` says why)."""
        return self.stop_reason is not None

    @property
    def x_best(self) -> Any:
        """The incumbent (best point so far)."""
        return self._out(self.x)

    @property
    def f_best(self) -> float:
        """The incumbent's value (minimisation sense)."""
        return self.fx

    @property
    def n_outstanding(self) -> int:
        """Number of asked points whose value has not been told yet."""
        return len(self._outstanding)

    def ask(self, n: int | None = None) -> Any:
        """The next point to evaluate, or ``None`` when none can be asked now.

        ``None`` means the run has stopped, or (with outstanding points) that the budget is
        fully handed out. ``ask(k)`` returns a list of up to ``k`` distinct points to evaluate
        in parallel (fewer only at the end of the budget or of the run).
        """
        if n is None:
            return self._ask_one()
        check_positive_int("n", n)
        out = []
        for _ in range(n):
            x = self._ask_one()
            if x is None:
                break
            out.append(x)
        return out

    def tell(self, x: ArrayLike, value: float) -> None:
        """Report ``value = F(x)``.

        ``x`` is usually an asked point; a point that was not asked (a known good point) is
        counted as an evaluation and becomes the incumbent if it improves on it. A point already
        evaluated is ignored.
        """
        value = _to_float(value)  # before any state changes
        y = self._as_point(x)
        key = _key(y)
        asked = self._outstanding.pop(key, None) is not None
        if not asked:
            if self.stop_reason is not None:
                raise RuntimeError(f"the run has stopped ({self.stop_reason}); nothing to tell")
            if key in self._cache:
                return
            if not self._in_bounds(y):
                raise ValueError("x lies outside bounds")
        value = self._check_value(value, first=key == _key(self.x0))
        self._record(y, key, value)
        in_batch = False
        for i, batch_key in enumerate(self._batch_keys):
            if batch_key == key:
                self._batch_values[i] = value
                in_batch = True
        if not in_batch and value < self.fx:
            self._move(y, value)  # a late, extra or user-given point that improves
        if self.stop_reason is None:
            self._advance()

    def minimize(
        self,
        fn: Callable[[Any], float],
        *,
        workers: int = 1,
        executor: concurrent.futures.Executor | None = None,
    ) -> OptimResult:
        """Drive ask/tell with ``fn`` until the stopping rule fires.

        Args:
            fn: The black box ``x -> float``.
            workers: Points evaluated at once. With ``workers > 1`` the run asks ``workers``
                points, evaluates them with ``executor`` (default: a
                ``concurrent.futures.ThreadPoolExecutor``) and tells them in ask order, so the
                run is deterministic for a given ``workers``.
            executor: Any ``concurrent.futures.Executor`` (e.g. a ``ProcessPoolExecutor`` for
                a pure-Python ``fn``, which must then be picklable).
        """
        check_positive_int("workers", workers)
        if workers == 1 and executor is None:
            while (x := self.ask()) is not None:
                self.tell(x, _to_float(fn(x), "fn's return value"))
            return self.result()
        own = executor is None
        pool = concurrent.futures.ThreadPoolExecutor(workers) if own else executor
        try:
            while not self.done:
                xs = self.ask(workers)
                if not xs:
                    break
                futures = [pool.submit(fn, x) for x in xs]
                for x, fut in zip(xs, futures, strict=True):
                    self.tell(x, _to_float(fut.result(), "fn's return value"))
        finally:
            if own:
                pool.shutdown()
        return self.result()

    def result(self, sense: str = "min") -> OptimResult:
        """The run's :class:`OptimResult` (``sense="max"`` negates values back)."""
        sign = -1.0 if sense == "max" else 1.0
        trace = [{**t, "f": sign * t["f"]} for t in self.trace]
        return OptimResult(
            x_best=self._out(self.x),
            f_best=sign * self.fx,
            n_evals=self.n_evals,
            n_iters=self.n_iters,
            stop_reason=self.stop_reason or "running",
            sense=sense,
            values=[sign * v for v in self.values],
            trace=trace,
        )

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything that evolves during the run (a deep copy), for :meth:`load_state_dict`.

        The configuration and the objects given to the constructor that are not plain data
        (a problem, a network) are not included: rebuild the optimizer with the same arguments,
        then load the state. The generator is stored by its state.
        """
        state = {
            k: copy.deepcopy(v)
            for k, v in self.__dict__.items()
            if k not in self._NOT_STATE and k not in ("generator", "_clock")
        }
        state["_elapsed"] = self._elapsed_now()
        state["generator_state"] = self.generator.get_state()
        state["class"] = type(self).__name__
        state["config"] = _plain(getattr(self, "config", None))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the continuation is bit-identical."""
        if state.get("class") != type(self).__name__:
            raise ValueError(
                f"state_dict is for {state.get('class')!r}, not {type(self).__name__!r}"
            )
        if state.get("config") != _plain(getattr(self, "config", None)):
            raise ValueError("state_dict was saved with a different config")
        for k, v in state.items():
            if k in ("class", "config", "generator_state"):
                continue
            setattr(self, k, copy.deepcopy(v))
        self.generator.set_state(state["generator_state"])
        self._batch_keys = [_key(p) for p in self._batch]  # also for states saved before them
        self._clock = time.perf_counter()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_elapsed"] = self._elapsed_now()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batch_keys = [_key(p) for p in self._batch]
        self._clock = time.perf_counter()

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def _next_batch(self) -> list[torch.Tensor]:
        """The ordered trial points of the next step (at least one)."""

    @abstractmethod
    def _resolve(
        self, points: list[torch.Tensor], values: list[float | None], winner: int | None
    ) -> str | None:
        """Apply the step's outcome; return the iteration status, or ``None`` to go on."""

    def _accept(self, value: float) -> bool:
        """Whether a trial value improves on the incumbent (the opportunistic stop)."""
        return value < self.fx

    def _converged(self) -> bool:
        return False

    _converged_reason = "r_min"

    def _radii(self) -> dict[str, float]:
        return {}

    def _extra_point(self) -> torch.Tensor:
        """A point to hand out when every point of the batch is outstanding."""
        w = torch.randn(self.n, generator=self.generator, dtype=torch.float64)
        scale = 1.0 + self.x.abs().max().item()
        return self.x + 0.1 * scale * (w / w.abs().max()).to(self.x)

    def _move(self, y: torch.Tensor, fy: float) -> None:
        self.x, self.fx = y.to(self.x0).clone(), fy

    # ----------------------------------------------------------------- internals
    def _ask_one(self) -> Any:
        if self.stop_reason is not None:
            return None
        if self._elapsed_now() >= self.budget.max_time_s:
            self._stop("time")
            return None
        if self.n_evals + len(self._outstanding) >= self.budget.max_evals:
            return None
        for i, p in enumerate(self._batch):
            if self._batch_values[i] is None and not self._batch_asked[i]:
                key = self._batch_keys[i]
                self._batch_asked[i] = True
                if key in self._outstanding:
                    continue
                self._outstanding[key] = p
                return self._out(p)
        for _ in range(100):
            p = self._extra_point().to(self.x0)
            key = _key(p)
            if self._in_bounds(p) and key not in self._cache and key not in self._outstanding:
                self._outstanding[key] = p
                return self._out(p)
        return None

    def _set_batch(self, points: list[torch.Tensor]) -> None:
        if not points:
            raise RuntimeError("_next_batch must return at least one point")
        self._batch = [p.to(self.x0) for p in points]
        # the points' cache keys, computed once per batch (every tell compares against them)
        self._batch_keys = [_key(p) for p in self._batch]
        self._batch_values = []
        self._batch_asked = [False] * len(self._batch)
        for p, key in zip(self._batch, self._batch_keys, strict=True):
            if not self._in_bounds(p):
                self._batch_values.append(math.inf)
            else:
                self._batch_values.append(self._cache.get(key))

    def _winner(self) -> tuple[bool, int | None]:
        """(resolved, index of the first accepted point) of the current batch."""
        for i, v in enumerate(self._batch_values):
            if v is None:
                return False, None
            if self._accept(v):
                return True, i
        return True, None

    def _advance(self) -> None:
        """Resolve every resolvable batch, open the next ones, apply the stopping rules."""
        while self.stop_reason is None:
            if not self._init_done:
                if self._batch_values[0] is None:
                    break
                self._init_done = True
                if self._batch_values[0] < self.fx:
                    self._move(self._batch[0], self._batch_values[0])
                self._set_batch(self._next_batch())
                continue
            resolved, winner = self._winner()
            if not resolved:
                break
            status = self._resolve(self._batch, self._batch_values, winner)
            if status is not None:
                self.n_iters += 1
                self.trace.append(
                    {
                        "k": self.n_iters,
                        "f": self.fx,
                        "n_evals": self.n_evals,
                        "time": self._elapsed_now(),
                        "status": status,
                        **self._radii(),
                    }
                )
                if self._converged():
                    self._stop(self._converged_reason)
                    break
                if self.budget.max_iters is not None and self.n_iters >= self.budget.max_iters:
                    self._stop("iters")
                    break
            self._set_batch(self._next_batch())
        if (
            self.stop_reason is None
            and self.n_evals >= self.budget.max_evals
            and not self._outstanding
        ):
            self._stop("budget")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def _record(self, y: torch.Tensor, key: bytes, value: float) -> None:
        self._cache[key] = value
        self._points.append(y.detach().clone())
        self.n_evals += 1
        self.values.append(value)

    def _check_value(self, value: float, first: bool) -> float:
        if first and not math.isfinite(value):
            raise ValueError(f"the objective at x0 is not finite ({value}); check fn/phi")
        if math.isnan(value) or value == -math.inf:  # +inf is a legitimate barrier value
            if self.nonfinite == "raise":
                raise ValueError(f"the objective returned a non-finite value ({value})")
            if not self._warned:
                warnings.warn(
                    "the objective returned a non-finite value; treated as a failed trial point",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned = True
            return math.inf
        return value

    def _elapsed_now(self) -> float:
        return self._elapsed + (time.perf_counter() - self._clock)

    def _in_bounds(self, y: torch.Tensor) -> bool:
        if self.bounds is None:
            return True
        lo, hi = self.bounds
        return bool(((y >= lo) & (y <= hi)).all())

    def _as_point(self, x: ArrayLike) -> torch.Tensor:
        y = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        y = y.detach().to(device=self.x0.device, dtype=self.x0.dtype).reshape(-1)
        if y.numel() != self.n:
            raise ValueError(f"x must have {self.n} entries, got {y.numel()}")
        return y

    def _out(self, p: torch.Tensor) -> Any:
        return p.detach().cpu().numpy().copy() if self._numpy_io else p.clone()


def as_budget(budget: int | Budget) -> Budget:
    """Accept an int (evaluations) or a :class:`Budget`."""
    if isinstance(budget, Budget):
        return budget
    return Budget(max_evals=check_positive_int("budget", budget))


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A dedicated CPU generator from a generator, a seed or ``None``."""
    if isinstance(generator, torch.Generator):
        return generator
    return make_generator(generator, name="generator")


def check_x0(x0: Any, bounds: Bounds | None) -> tuple[torch.Tensor, tuple | None]:
    """Validate ``x0`` (1-D, finite, floating, inside ``bounds``) and broadcast the bounds.

    Tensors keep their dtype and device (an integer tensor is refused); NumPy arrays and
    sequences become float64 tensors (float32 arrays stay float32).
    """
    if not isinstance(x0, torch.Tensor):
        if isinstance(x0, (str, bytes)) or not isinstance(x0, (np.ndarray, Sequence)):
            raise TypeError(
                f"x0 must be a torch.Tensor, a NumPy array or a sequence of floats, "
                f"got {type(x0).__name__}"
            )
        arr = np.asarray(x0)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"x0 must hold real numbers, got dtype {arr.dtype}")
        x0 = torch.as_tensor(arr if arr.dtype.kind == "f" else arr.astype(np.float64))
    if x0.dim() != 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D tensor, got shape {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains non-finite values (NaN or inf)")
    x0 = x0.detach().clone()
    if bounds is None:
        return x0, None
    if not isinstance(bounds, (Sequence, np.ndarray)) or len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    lo, hi = (_bound(b, x0) for b in bounds)
    if torch.isnan(lo).any() or torch.isnan(hi).any() or (lo > hi).any():
        raise ValueError("bounds must satisfy lower <= upper elementwise (no NaN)")
    if ((x0 < lo) | (x0 > hi)).any():
        raise ValueError("x0 lies outside bounds")
    return x0, (lo, hi)


def _bound(b: Any, x0: torch.Tensor) -> torch.Tensor:
    if not isinstance(b, torch.Tensor):
        b = np.asarray(b, dtype=np.float64)
    t = torch.as_tensor(b).to(dtype=x0.dtype, device=x0.device)
    try:
        return t.expand_as(x0).clone()
    except RuntimeError as err:
        raise ValueError(
            f"bounds must be scalars or have {x0.numel()} entries, got shape {tuple(t.shape)}"
        ) from err


def _key(p: torch.Tensor) -> bytes:
    return p.detach().cpu().numpy().tobytes()


def _plain(config: Any) -> Any:
    return asdict(config) if is_dataclass(config) else config


def _to_float(value: Any, name: str = "value") -> float:
    """``value`` (a number, 0-d/1-element tensor or array) as a float, or a clear error."""
    if isinstance(value, torch.Tensor | np.ndarray):
        numel = value.size if isinstance(value, np.ndarray) else value.numel()
        if numel != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach() if isinstance(value, torch.Tensor) else value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")
    return float(value)
