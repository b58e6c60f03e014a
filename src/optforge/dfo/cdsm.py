"""Covering direct search (cDSM): a derivative-free minimizer with ask/tell and ``minimize``.

Papers: C. Audet, P.-Y. Bouchet, L. Bourdin, "Convergence towards a local minimum by direct
search methods with a covering step" (arXiv 2401.07097, 2024), as implemented in the official
code of P.-Y. Bouchet, T. Vidal, "Optimization by Directional Attacks: Solving Problems with
Neural Network Surrogates" (arXiv 2510.01461, 2025; ``PierreYvesBouchet/Optimization-by-
Directional-Attacks``). This module *minimises*; :mod:`optforge.dfo.hybrid` maximises
``f(Φ(x))`` by minimising its negation.

One iteration from the incumbent ``x`` with poll radius ``r`` (all radii in the ℓ∞ norm) is one
ordered, opportunistic batch of trial points: the first strict improvement
``F(y) < F(x) - c r²`` (``c = forcing_c``, 0 in the official code) ends it.

1. **Covering** (one point; first in the official order, last by default): ``y = x + ρ w`` with
   ``w`` a Gaussian direction normalised to ``‖w‖∞ = 1`` (uniform on the sphere, then ℓ∞-scaled)
   and ``ρ = r_c U^{1/n}`` (``"official"``, ``r_c = covering_radius``, default ``r0``);
   ``"cube"`` draws ``y`` uniformly in ``B∞(x, r_c)``; ``"farthest"`` keeps, of 8 cube
   candidates, the one farthest (ℓ∞) from every evaluated point. On success move, keep ``r``.
2. **Search** (optional, off in the official runs): ``y = x + min(r_max, r0 √(s+1)) w``, ``s``
   the number of search steps so far. On success move (``search_expands``: also ``r ← 2r``).
3. **Model search** (``model_search``, NOMAD's quadratic-model search; not in the paper): a
   quadratic model of the evaluated points near ``x`` (:mod:`optforge.dfo.quadratic_model`),
   minimised in ``B∞(x, 2r)``; its minimiser is one trial point. On success ``r ← 2r``.
4. **Poll**: with a Householder matrix ``H = I - 2vvᵀ`` (``v`` uniform on the sphere), the set
   ``{±h_i}`` (``"2n"``) or the minimal positive basis ``{R h_i} ∪ {-R Σ h_i}`` (``"n+1"``,
   ``R`` a product of Givens rotations on disjoint random index pairs by angles in
   ``[0, arccos(1/n)]``), every direction scaled to ``‖d‖∞ = r``, in the given order or
   (``poll_order="model"``) by increasing model value, falling back to the cosine with the last
   successful step. On success ``r ← min(r_max, 2r)``; on failure ``r ← max(r_min, r/2)``.

The run stops when a poll at ``r = r_min`` fails (``stop_reason="r_min"``) or the budget is
spent; ask/tell, parallel asks, checkpoints, the evaluation cache, the bounds and the budget are
those of :mod:`optforge.dfo.direct_search`.

Two presets: the default :class:`CDSMConfig` is the competitive solver (official covering, placed
last; model search; model-ordered ``"2n"`` poll); :meth:`CDSMConfig.official` is the paper's
cDSM (covering first, no search, poll in the drawn order), used by the reproduction.

Example::

    >>> import numpy as np
    >>> from optforge.dfo import minimize
    >>> res = minimize(lambda x: float(((x - 1) ** 2).sum()), np.zeros(3), budget=300)
    >>> bool(res.f_best < 1e-6)
    True

Choices:

* The official covering length is ``(U r_c)^{1/n}`` with ``r_c = r0``; with ``r0 = 1`` (the
  ResNet problem and P1) it is ``r_c U^{1/n}``, the spec's reading, used for every ``r0``.
* The official "random rotation" for the ``"n+1"`` poll is not orthogonal; one proper rotation
  is used for the whole set, which keeps it a positive spanning set.
* There is no mesh in the official code (continuous random directions); ``forcing_c > 0`` gives
  the sufficient-decrease ("theory") mode of the convergence analysis.
* Placing the covering point last (default) evaluates it at every unsuccessful iteration; the
  refined points are limits of unsuccessful iterations, so the trial points stay dense around
  them as the covering argument needs.
* The optional "speculative search" (off in every official run) is not implemented.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from optforge._core import check_nonnegative, check_positive, check_positive_int
from optforge.dfo.direct_search import (
    ArrayLike,
    Bounds,
    Budget,
    DirectSearchBase,
    OptimResult,
    _to_float,
)
from optforge.dfo.quadratic_model import (
    fit_quadratic,
    minimize_quadratic_in_box,
    model_value,
)

__all__ = [
    "CDSM",
    "Budget",
    "CDSMConfig",
    "OptimResult",
    "minimize",
    "poll_directions",
]

PollKind = Literal["2n", "n+1"]
CoveringKind = Literal["official", "cube", "volume_uniform", "farthest", "none"]
PollOrder = Literal["given", "model"]
_COVERINGS = ("official", "cube", "volume_uniform", "farthest", "none")


@dataclass(frozen=True)
class CDSMConfig:
    """Hyper-parameters of cDSM (radii in the ℓ∞ norm).

    Attributes:
        r0: Initial poll radius; also the covering radius and search base radius by default.
        r_min: Smallest poll radius; a failed poll at ``r_min`` stops the run.
        r_max: Largest poll radius.
        poll: ``"2n"`` (Householder ± columns; cDSM default) or ``"n+1"`` (minimal basis).
        covering: ``"official"`` (default: ``r_c U^{1/n} w``), ``"cube"`` (uniform in the ℓ∞
            ball; ``"volume_uniform"`` is the same), ``"farthest"`` or ``"none"``.
        covering_radius: Radius ``r_c`` of the covering ball (default ``r0``).
        covering_last: Evaluate the covering point after the poll (only at unsuccessful
            iterations) instead of first (the official order).
        search: Whether to run the random search step (off in the official runs).
        search_expands: Double the poll radius after a successful search (the hybrid's rule).
        model_search: Try the minimiser of a quadratic model before the poll (NOMAD's search).
        poll_order: ``"given"`` (the drawn order) or ``"model"`` (most promising first).
        forcing_c: Sufficient-decrease constant ``c`` (accept if ``F(y) < F(x) - c r²``).
    """

    r0: float = 1.0
    r_min: float = 1e-5
    r_max: float = math.inf
    poll: PollKind = "2n"
    covering: CoveringKind = "official"
    covering_radius: float | None = None
    covering_last: bool = True
    search: bool = False
    search_expands: bool = False
    model_search: bool = True
    poll_order: PollOrder = "model"
    forcing_c: float = 0.0

    def __post_init__(self) -> None:
        check_positive("r0", self.r0)
        check_positive("r_min", self.r_min)
        if not (isinstance(self.r_max, (int, float)) and self.r_max > 0):
            raise ValueError(f"r_max must be > 0, got {self.r_max!r}")
        if self.r_min > self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be <= r_max ({self.r_max})")
        if self.poll not in ("2n", "n+1"):
            raise ValueError(f"poll must be '2n' or 'n+1', got {self.poll!r}")
        if self.covering not in _COVERINGS:
            raise ValueError(f"covering must be one of {_COVERINGS}, got {self.covering!r}")
        if self.poll_order not in ("given", "model"):
            raise ValueError(f"poll_order must be 'given' or 'model', got {self.poll_order!r}")
        if self.covering_radius is not None:
            check_positive("covering_radius", self.covering_radius)
        check_nonnegative("forcing_c", self.forcing_c)

    @classmethod
    def official(cls, **overrides: Any) -> CDSMConfig:
        """The paper's cDSM: covering first, no search, no model, poll in the drawn order."""
        base = {
            "covering": "official",
            "covering_last": False,
            "search": False,
            "model_search": False,
            "poll_order": "given",
        }
        return cls(**{**base, **overrides})


class CDSM(DirectSearchBase):
    """Covering direct search minimising a black box ``F``, ask/tell style.

    Args:
        x0: Starting point (1-D floating tensor, NumPy array or list, inside ``bounds``).
        config: Hyper-parameters (:class:`CDSMConfig`).
        bounds: Optional ``(lower, upper)`` box; points outside are rejected without evaluation.
        budget: Number of evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None``.
        nonfinite: ``"reject"`` (a NaN or ``-inf`` value is a failed, counted trial; warns
            once) or ``"raise"``. ``+inf`` is the extreme-barrier value of an infeasible point.

    Example::

        >>> import torch
        >>> opt = CDSM(torch.zeros(2), CDSMConfig(r0=0.5), budget=300, generator=0)
        >>> while (x := opt.ask()) is not None:
        ...     opt.tell(x, float(((x - 0.3) ** 2).sum()))
        >>> bool(opt.f_best < 1e-6)
        True
        >>> xs = opt.ask(4)  # several outstanding points (after the run: an empty list)
    """

    def __init__(
        self,
        x0: ArrayLike,
        config: CDSMConfig | None = None,
        *,
        bounds: Bounds | None = None,
        budget: int | Budget = 1000,
        generator: torch.Generator | int | None = None,
        nonfinite: Literal["reject", "raise"] = "reject",
    ) -> None:
        self.config = config if config is not None else CDSMConfig()
        if not isinstance(self.config, CDSMConfig):
            raise TypeError(f"config must be a CDSMConfig, got {type(config).__name__}")
        self.r = min(self.config.r0, self.config.r_max)
        self.n_search = 0
        self._poll_failed_at_min = False
        self._labels: list[str] = []
        self._last_step: torch.Tensor | None = None
        super().__init__(x0, bounds=bounds, budget=budget, generator=generator, nonfinite=nonfinite)

    _MODEL_RADIUS = 2.0  # trust radius of the model search, in poll radii
    _FIT_RADIUS = 8.0  # points used to fit the model lie within this many poll radii
    _MODEL_CAP = 100
    _MODEL_EXTRA = 2

    def _radii(self) -> dict[str, float]:
        return {"r_dsm": self.r}

    def _converged(self) -> bool:
        return self._poll_failed_at_min

    def _accept(self, value: float) -> bool:
        return value < self.fx - self.config.forcing_c * self.r**2

    def _next_batch(self) -> list[torch.Tensor]:
        points, self._labels = self._dsm_points(search=True, poll=True)
        return points

    def _resolve(self, points, values, winner) -> str:
        return self._dsm_resolve(points, values, winner)

    def _extra_point(self) -> torch.Tensor:
        return self._covering_point()

    # ------------------------------------------------------------------ the cDSM steps
    def _dsm_points(self, search: bool, poll: bool) -> tuple[list[torch.Tensor], list[str]]:
        """The ordered trial points of one cDSM iteration and the step each belongs to."""
        cfg = self.config
        points: list[torch.Tensor] = []
        labels: list[str] = []
        covering = self._covering_point() if cfg.covering != "none" else None
        if covering is not None and not cfg.covering_last:
            points.append(covering)
            labels.append("covering")
        if cfg.search and search:
            radius = min(cfg.r_max, cfg.r0 * math.sqrt(self.n_search + 1))
            self.n_search += 1
            points.append(self.x + radius * _unit_inf(self.n, self.generator, self.x.dtype))
            labels.append("search")
        model = self._model() if (cfg.model_search or cfg.poll_order == "model") and poll else None
        if cfg.model_search and model is not None:
            y = self._model_point(model)
            if y is not None:
                points.append(y)
                labels.append("model")
        if poll:
            dirs = poll_directions(self.n, self.r, cfg.poll, self.generator, self.x.dtype)
            dirs = self._order(dirs.to(self.x), model)
            points.extend(self.x + d for d in dirs)
            labels.extend(["poll"] * len(dirs))
        if covering is not None and cfg.covering_last:
            points.append(covering)
            labels.append("covering")
        if not points:  # nothing to try (hybrid at r_min with covering "none"): re-ask x
            points, labels = [self.x.clone()], ["none"]
        return points, labels

    def _dsm_resolve(self, points, values, winner) -> str:
        cfg = self.config
        labels = self._labels
        if winner is not None:
            label = labels[winner]
            self._last_step = points[winner] - self.x
            self._move(points[winner], values[winner])
            if label in ("poll", "model") or (label == "search" and cfg.search_expands):
                self.r = min(cfg.r_max, 2.0 * self.r)
            return label
        if "poll" in labels:
            self._poll_failed_at_min = self.r <= cfg.r_min
            self.r = max(cfg.r_min, self.r / 2.0)
        return "failure"

    def _covering_point(self) -> torch.Tensor:
        cfg = self.config
        rc = cfg.covering_radius if cfg.covering_radius is not None else cfg.r0
        n, gen, dtype = self.n, self.generator, self.x.dtype
        if cfg.covering in ("official", "none"):
            u = float(torch.rand((), generator=gen, dtype=torch.float64))
            step = rc * u ** (1.0 / n) * _unit_inf(n, gen, dtype)
        elif cfg.covering in ("cube", "volume_uniform"):
            step = rc * (2.0 * torch.rand(n, generator=gen, dtype=torch.float64) - 1.0)
        else:  # farthest of 8 uniform candidates from the evaluated points
            cand = rc * (2.0 * torch.rand(8, n, generator=gen, dtype=torch.float64) - 1.0)
            cand = cand.to(self.x) + self.x
            pts = torch.stack(self._points[-4096:])
            dist = torch.cdist(cand, pts, p=float("inf")).amin(dim=1)
            return cand[int(dist.argmax())]
        return self.x + step.to(self.x)

    # ------------------------------------------------------------------ model and ordering
    def _model(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A quadratic model around ``x`` from the nearest evaluated points (``None``: too few)."""
        n = self.n
        if len(self._points) < n + 1:
            return None
        p = (n + 1) * (n + 2) // 2
        m_max = min(p + self._MODEL_EXTRA * n, max(2 * n + 1, self._MODEL_CAP))
        window = self._points[-max(4 * m_max, 200) :]
        pts = torch.stack(window).to(torch.float64)
        vals = torch.tensor([self._cache[_bytes(q)] for q in window], dtype=torch.float64)
        finite = torch.isfinite(vals)
        pts, vals = pts[finite], vals[finite]
        x = self.x.to(torch.float64)
        steps = pts - x
        dist = steps.abs().amax(dim=1)
        keep = dist <= self._FIT_RADIUS * max(self.r, 1e-300)
        steps, vals = steps[keep], vals[keep]
        if len(steps) < n + 1:
            return None
        order = torch.argsort(dist[keep])[:m_max]
        steps, vals = steps[order], vals[order]
        scale = float(steps.abs().max()) or 1.0
        return fit_quadratic(steps, vals - self.fx, scale)

    def _model_point(self, model: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor | None:
        g, h = model
        x = self.x.to(torch.float64)
        lower = upper = None
        if self.bounds is not None:
            lower, upper = self.bounds[0].to(x) - x, self.bounds[1].to(x) - x
        s = minimize_quadratic_in_box(g, h, self._MODEL_RADIUS * self.r, lower, upper)
        if not bool(s.abs().max() > 0):
            return None
        return (x + s).to(self.x)

    def _order(self, dirs: torch.Tensor, model) -> torch.Tensor:
        if self.config.poll_order != "model":
            return dirs
        if model is not None:
            g, h = model
            score = model_value(g, h, dirs.to(torch.float64))
        elif self._last_step is not None and bool(self._last_step.abs().max() > 0):
            score = -torch.nn.functional.cosine_similarity(
                dirs.to(torch.float64), self._last_step.to(torch.float64).unsqueeze(0)
            )
        else:
            return dirs
        return dirs[torch.argsort(score, stable=True)]


def minimize(
    fn: Callable[[Any], float],
    x0: ArrayLike,
    bounds: Bounds | None = None,
    budget: int | Budget = 1000,
    *,
    config: CDSMConfig | None = None,
    constraints: Callable[[torch.Tensor], torch.Tensor] | None = None,
    constraint_mode: Literal["penalty", "extreme_barrier"] = "penalty",
    penalty_scale: float = 1.0,
    generator: torch.Generator | int | None = None,
    nonfinite: Literal["reject", "raise"] = "reject",
    workers: int = 1,
    executor: concurrent.futures.Executor | None = None,
) -> OptimResult:
    """Minimise ``fn`` with cDSM from ``x0`` within ``budget`` evaluations.

    Args:
        fn: Black box ``x -> float`` (a 0-d tensor is accepted).
        x0: Starting point (1-D floating tensor, NumPy array or list, inside ``bounds``);
            ``fn`` then receives points of the same kind (NumPy arrays for arrays and lists).
        bounds: Optional ``(lower, upper)`` box (scalars, sequences, arrays or tensors).
        budget: Number of evaluations or a :class:`Budget`.
        config: cDSM hyper-parameters.
        constraints: Optional ``c(x) -> tensor``, feasible where every entry is ``<= 0``.
        constraint_mode: ``"penalty"`` (the paper's: ``fn(x) + ‖s·ReLU(c(x))‖²`` with
            ``s = penalty_scale``) or ``"extreme_barrier"`` (infeasible points get ``+inf``;
            suggested, not in the paper).
        penalty_scale: The constraint scaling ``s`` of the penalty.
        generator: ``torch.Generator``, seed or ``None``.
        nonfinite: What a NaN/inf value does: ``"reject"`` (failed trial) or ``"raise"``.
        workers: Points evaluated at once (``concurrent.futures``; see
            :meth:`~optforge.dfo.direct_search.DirectSearchBase.minimize`).
        executor: A ``concurrent.futures.Executor`` to evaluate with (default: threads).

    Returns:
        The :class:`OptimResult` (``f_best`` is the penalised value in penalty mode).
    """
    if not callable(fn):
        raise TypeError("fn must be callable")
    if constraint_mode not in ("penalty", "extreme_barrier"):
        raise ValueError(
            f"constraint_mode must be 'penalty' or 'extreme_barrier', got {constraint_mode!r}"
        )
    check_positive("penalty_scale", penalty_scale)
    objective = fn
    if constraints is not None:

        def objective(x: Any) -> float:
            c = torch.as_tensor(constraints(x), dtype=torch.float64).reshape(-1)
            if constraint_mode == "extreme_barrier":
                return math.inf if bool((c > 0).any()) else _to_float(fn(x))
            return _to_float(fn(x)) + float(((penalty_scale * c.clamp_min(0.0)) ** 2).sum())

    opt = CDSM(x0, config, bounds=bounds, budget=budget, generator=generator, nonfinite=nonfinite)
    return opt.minimize(objective, workers=workers, executor=executor)


def poll_directions(
    n: int,
    radius: float,
    kind: PollKind = "2n",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A random positive spanning set of poll directions, each with ``‖d‖∞ = radius``.

    Args:
        n: Dimension.
        radius: ℓ∞ length of every direction.
        kind: ``"2n"`` (columns of a Householder matrix and their negatives) or ``"n+1"``
            (a rotated Householder basis plus minus the sum of its columns).
        generator: Source of randomness.
        dtype: Floating dtype of the result.

    Returns:
        A ``(2n, n)`` or ``(n+1, n)`` tensor whose rows are the directions, in poll order.
    """
    check_positive_int("n", n)
    check_positive("radius", radius)
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    h = torch.eye(n, dtype=torch.float64) - 2.0 * torch.outer(v, v)  # symmetric: rows = columns
    if kind == "2n":
        dirs = torch.cat([h, -h])
    elif kind == "n+1":
        if n > 1:
            h = h @ _givens_rotation(n, math.acos(1.0 / n), generator).T
        dirs = torch.cat([h, -h.sum(0, keepdim=True)])
    else:
        raise ValueError(f"kind must be '2n' or 'n+1', got {kind!r}")
    dirs = dirs / dirs.abs().amax(dim=1, keepdim=True)
    return (radius * dirs).to(dtype)


def _givens_rotation(n: int, max_angle: float, generator: torch.Generator | None) -> torch.Tensor:
    """Orthogonal matrix: Givens rotations on disjoint random index pairs, angles ≤ max_angle."""
    perm = torch.randperm(n, generator=generator)
    angles = max_angle * torch.rand(n // 2, generator=generator, dtype=torch.float64)
    rot = torch.eye(n, dtype=torch.float64)
    i, j = perm[0 : 2 * (n // 2) : 2], perm[1 : 2 * (n // 2) : 2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    rot[i, i], rot[j, j] = cos, cos
    rot[i, j], rot[j, i] = -sin, sin
    return rot


def _unit_inf(n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Uniform direction on the sphere (a normalised Gaussian) scaled to ``‖w‖∞ = 1``."""
    w = torch.randn(n, generator=generator, dtype=torch.float64)
    return (w / w.abs().max()).to(dtype)


def _bytes(p: torch.Tensor) -> bytes:
    return p.detach().cpu().numpy().tobytes()
