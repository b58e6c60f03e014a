"""Adapters to the black-box optimizers a user would otherwise pick: CMA-ES, NGOpt, NOMAD.

Each adapter minimises ``fn(x: np.ndarray) -> float`` from ``x0`` with at most ``budget``
evaluations and returns a :class:`BaselineRun` with every value in evaluation order, so that
evaluations-to-target curves compare like for like with :class:`~optforge.dfo.CDSM`:

* :func:`run_cma` — ``cma.CMAEvolutionStrategy`` (pycma), ask/tell by generation;
* :func:`run_nevergrad` — ``nevergrad.optimizers.NGOpt`` (or any registered name);
* :func:`run_nomad` — NOMAD 4 (MADS, the direct-search community's reference implementation;
  pip ``PyNomadBBO``, module ``PyNomad``) with its defaults (quadratic-model search, Nelder-Mead
  search, ``ORTHO N+1 QUAD`` poll). From ``n ≥ 50`` NOMAD disables its models itself, yet its
  model-based pieces (``ORTHO N+1 QUAD`` directions, sorting by a quadratic model) and the
  Nelder-Mead search then cost NOMAD 0.1–2 s of its own time per evaluation at ``n = 100``
  (measured here, growing with the run); the adapter then uses ``ORTHO 2N`` directions, sorting
  by the last success, and no NM, model or speculative search (``large_n_defaults=True``).

All three come with the ``dfo`` extra and are imported inside the functions.

Example::

    >>> import numpy as np
    >>> run = run_cma(lambda x: float(((x - 1) ** 2).sum()), np.zeros(3), 500, seed=0)
    >>> run.n_evals <= 500 and run.f_best < 1e-6
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optforge._core import require

__all__ = ["BaselineRun", "run_cma", "run_nevergrad", "run_nomad"]

Objective = Callable[[np.ndarray], float]


@dataclass
class BaselineRun:
    """Values of a baseline run in evaluation order (minimisation sense) and its best point.

    ``error`` holds the message when the library itself failed mid-run (the run then ends
    there, with the evaluations made so far).
    """

    values: list[float] = field(default_factory=list)
    x_best: np.ndarray | None = None
    f_best: float = math.inf
    error: str | None = None

    @property
    def n_evals(self) -> int:
        """Number of evaluations made."""
        return len(self.values)

    def add(self, x: np.ndarray, value: float) -> None:
        """Record one evaluation."""
        self.values.append(value)
        if value < self.f_best:
            self.f_best, self.x_best = value, np.array(x, dtype=np.float64)


def _safe(value: float) -> float:
    return value if math.isfinite(value) else 1e30


def run_cma(
    fn: Objective,
    x0: np.ndarray,
    budget: int,
    seed: int,
    sigma0: float = 1.0,
    bounds: tuple[Any, Any] | None = None,
) -> BaselineRun:
    """CMA-ES (pycma) with step size ``sigma0``, stopped at ``budget`` evaluations."""
    cma = require("cma", "dfo")
    opts: dict[str, Any] = {"maxfevals": budget, "seed": seed + 1, "verbose": -9}
    if bounds is not None:
        opts["bounds"] = [_listify(bounds[0]), _listify(bounds[1])]
    with warnings.catch_warnings():  # pycma 4.5 warns about its own injected solutions
        warnings.simplefilter("ignore")
        return _cma_loop(cma, fn, x0, budget, sigma0, opts)


def _cma_loop(cma: Any, fn: Objective, x0: Any, budget: int, sigma0: float, opts: dict) -> Any:
    es = cma.CMAEvolutionStrategy(np.asarray(x0, dtype=np.float64), sigma0, opts)
    run = BaselineRun()
    while not es.stop() and run.n_evals < budget:
        pop = es.ask()
        losses = []
        for p in pop:
            if run.n_evals >= budget:
                break
            v = float(fn(p))
            run.add(p, v)
            losses.append(_safe(v))
        if len(losses) < len(pop):
            break
        es.tell(pop, losses)
    return run


def run_nevergrad(
    fn: Objective,
    x0: np.ndarray,
    budget: int,
    seed: int,
    optimizer: str = "NGOpt",
    bounds: tuple[Any, Any] | None = None,
) -> BaselineRun:
    """A nevergrad optimizer (default ``NGOpt``) with ``budget`` evaluations.

    nevergrad 1.0.12's meta-model step (``learn_on_k_best``, chosen by NGOpt on some
    low-dimensional problems) calls ``float`` on a 1-element array, which NumPy 2.4 refuses;
    the run then stops with ``error`` set instead of crashing the caller.
    """
    ng = require("nevergrad", "dfo")
    param = ng.p.Array(init=np.asarray(x0, dtype=np.float64))
    if bounds is not None:
        n = len(x0)
        param.set_bounds(_vec(bounds[0], n), _vec(bounds[1], n))
    param.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.registry[optimizer](parametrization=param, budget=budget)
    run = BaselineRun()
    with warnings.catch_warnings():  # NGOpt's inner pycma warns about injected solutions
        warnings.simplefilter("ignore")
        for _ in range(budget):
            try:
                cand = opt.ask()
            except (TypeError, ValueError) as err:  # nevergrad 1.0.12's metamodel, NumPy 2.4
                run.error = f"{type(err).__name__}: {err}"
                break
            v = float(fn(cand.value))
            run.add(cand.value, v)
            opt.tell(cand, _safe(v))
    return run


def run_nomad(
    fn: Objective,
    x0: np.ndarray,
    budget: int,
    seed: int,
    bounds: tuple[Any, Any] | None = None,
    options: Sequence[str] = (),
    large_n_defaults: bool = True,
) -> BaselineRun:
    """NOMAD 4 (``PyNomadBBO``) with its defaults, ``MAX_BB_EVAL = budget`` and ``SEED``.

    Args:
        fn: Objective ``x -> float`` (minimised).
        x0: Starting point.
        budget: Evaluations.
        seed: NOMAD's ``SEED``.
        bounds: Optional box (scalars or sequences).
        options: Extra NOMAD parameter lines (``"DIRECTION_TYPE ORTHO 2N"``, ...).
        large_n_defaults: From ``n ≥ 50``, the model-free settings of the module docstring.
    """
    nomad = require("PyNomad", "dfo")
    x0 = np.asarray(x0, dtype=np.float64)
    n = len(x0)
    params = [
        f"DIMENSION {n}",
        "BB_OUTPUT_TYPE OBJ",
        f"MAX_BB_EVAL {budget}",
        "DISPLAY_DEGREE 0",
        f"SEED {seed}",
    ]
    if large_n_defaults and n >= 50:
        params += [
            "DIRECTION_TYPE ORTHO 2N",
            "NM_SEARCH no",
            "QUAD_MODEL_SEARCH no",
            "SPECULATIVE_SEARCH no",
            "EVAL_QUEUE_SORT DIR_LAST_SUCCESS",
        ]
    params += list(options)
    run = BaselineRun()

    def blackbox(point: Any) -> int:
        x = np.array([point.get_coord(i) for i in range(point.size())], dtype=np.float64)
        v = float(fn(x))
        run.add(x, v)
        point.setBBO(repr(_safe(v)).encode())
        return 1

    lower = _vec(bounds[0], n).tolist() if bounds is not None else []
    upper = _vec(bounds[1], n).tolist() if bounds is not None else []
    nomad.setSeed(seed)  # NOMAD's generator is global to the process: reset it per run
    nomad.resetRandomNumberGenerator()
    nomad.optimize(blackbox, x0.tolist(), lower, upper, params)
    run.values = run.values[:budget]
    return run


def _vec(b: Any, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(b, dtype=np.float64), (n,)).copy()


def _listify(b: Any) -> Any:
    arr = np.asarray(b, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.tolist()
