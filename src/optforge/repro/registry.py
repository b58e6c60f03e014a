"""The registry of reproductions and the types a paper module declares.

A paper module in ``optforge/repro/papers/`` builds one :class:`Reproduction` and passes it to
:func:`register`. Modules there are discovered automatically, so adding a paper touches no
shared file. Example (abridged from ``papers/gradient_noise.py``)::

    register(
        Reproduction(
            name="gradient-noise",
            title="Adding Gradient Noise Improves Learning for Very Deep Networks",
            arxiv="1511.06807",
            spec="gradient_noise.md",
            configs={"smoke": {...}, "quick": {...}, "full": {...}},
            seeds={"smoke": 2, "quick": 5, "full": 20},
            methods={"sgd+noise": run_noisy, "sgd": run_plain},  # run(config, seed, device)
            claims=[
                Claim(
                    name="noise-rescues-poor-init",
                    statement="Noise lets a 20-layer ReLU MLP train from a poor init.",
                    metric=lambda r: r.mean("sgd+noise", "test_acc"),
                    op=">=",
                    threshold=0.85,
                    scales=("quick", "full"),
                ),
            ],
        )
    )

``methods_by_scale`` may narrow the methods run at a scale (e.g. two arms at ``smoke``).
``run(config, seed, device)`` returns a flat ``dict``: ``float`` values are scalar metrics
(aggregated across seeds by claims), ``list[float]`` values are curves (plotted against the
reproduction's ``plot_x`` curve, e.g. ``"step"``).

**One experiment, many arms.** When the arms share work (a trained model, a data set drawn per
seed), declare ``experiment=run(config, seed, device, arms) -> {arm: metrics}`` and give
``methods`` as the list of arm names instead of a mapping. The runner then calls the experiment
once per (config, seed) with the arms to run at that scale and hands each arm its share, so
every executor (local, processes, Ray) computes the shared work once per seed::

    def run(config, seed, device, arms):
        model = train_shared_model(config, seed, device)  # once per seed
        return {arm: evaluate(model, arm, config) for arm in arms}

    Reproduction(..., methods=["ours", "baseline"], experiment=run, ...)

**One experiment, many seeds.** When the seeds of an arm can run as one computation (a
vectorised ensemble: one stacked model per arm instead of one small model per seed), also declare
``batched=run(config, seeds, device, arms) -> {seed: {arm: metrics}}``. The runner then runs the
seeds in groups of ``seed_batch`` (``None``: all seeds of the run in one call) as one trial per
(arms, group), and records one trial row per seed as usual, with the call's time split evenly and
``batch_seeds`` naming the seeds that shared it; ``--seeds``, resume and the scheduler work per
seed as before. ``arms`` are one method (a ``methods`` mapping) or all arms (with
``experiment=``). Each seed must keep its own random streams (its own generators, not the global
one), so a seed's metrics do not depend on the other seeds of its group beyond float reduction
order::

    def run_seeds(config, seeds, device, arms):
        ensemble = train_stacked(config, seeds, device)  # weights [len(seeds), ...]
        return {seed: {arm: evaluate(ensemble, i, arm) for arm in arms}
                for i, seed in enumerate(seeds)}

    Reproduction(..., methods={"sgd": run_one}, batched=run_seeds, seed_batch=None, ...)
"""

from __future__ import annotations

import importlib
import itertools
import math
import pkgutil
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SCALES: tuple[str, ...] = ("smoke", "quick", "full")
Op = Literal[">=", ">", "<=", "<"]
MethodFn = Callable[[Mapping[str, Any], int, str], Mapping[str, Any]]
ExperimentFn = Callable[
    [Mapping[str, Any], int, str, Sequence[str]], Mapping[str, Mapping[str, Any]]
]
BatchedFn = Callable[
    [Mapping[str, Any], Sequence[int], str, Sequence[str]],
    Mapping[int, Mapping[str, Mapping[str, Any]]],
]


class Results:
    """Metrics of one run, method → seed → metric name → value, with aggregation helpers."""

    def __init__(self, metrics: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> None:
        self.metrics = metrics

    def values(self, method: str, metric: str) -> np.ndarray:
        """The metric's value for every seed of ``method`` (seed order), as a float array."""
        if method not in self.metrics:
            raise KeyError(f"no method {method!r}; have {sorted(self.metrics)}")
        per_seed = self.metrics[method]
        try:
            return np.array([float(per_seed[s][metric]) for s in sorted(per_seed)], dtype=float)
        except KeyError as err:
            raise KeyError(f"method {method!r} has no metric {metric!r}") from err

    def mean(self, method: str, metric: str) -> float:
        return float(np.mean(self.values(method, metric)))

    def median(self, method: str, metric: str) -> float:
        return float(np.median(self.values(method, metric)))

    def min(self, method: str, metric: str) -> float:
        return float(np.min(self.values(method, metric)))

    def max(self, method: str, metric: str) -> float:
        return float(np.max(self.values(method, metric)))

    def fraction(self, method: str, metric: str, predicate: Callable[[float], bool]) -> float:
        """Fraction of seeds whose metric satisfies ``predicate``."""
        vals = self.values(method, metric)
        return float(np.mean([bool(predicate(v)) for v in vals]))

    def paired(self, method_a: str, method_b: str, metric: str) -> np.ndarray:
        """Per-seed ``metric(a) - metric(b)`` (seeds are shared between methods)."""
        return self.values(method_a, metric) - self.values(method_b, metric)

    def ratios(self, method_a: str, method_b: str, metric: str) -> np.ndarray:
        """Per-seed ``metric(a) / metric(b)`` (seeds are shared between methods)."""
        return self.values(method_a, metric) / self.values(method_b, metric)

    def worst_ratio(self, method_a: str, method_b: str, metric: str) -> float:
        """Largest per-seed ``metric(a) / metric(b)`` (``< 1``: ``a`` lower on every seed)."""
        return float(np.max(self.ratios(method_a, method_b, metric)))

    def median_ratio(self, method_a: str, method_b: str, metric: str) -> float:
        """Median over seeds of ``metric(a) / metric(b)``."""
        return float(np.median(self.ratios(method_a, method_b, metric)))

    def mean_gap(self, method_a: str, method_b: str, metric: str) -> float:
        """``mean(metric(a)) − mean(metric(b))`` over seeds."""
        return self.mean(method_a, metric) - self.mean(method_b, metric)

    def worst_gap(self, method_a: str, method_b: str, metric: str) -> float:
        """Smallest per-seed ``metric(a) − metric(b)`` (``> 0``: ``a`` higher on every seed)."""
        return float(np.min(self.paired(method_a, method_b, metric)))

    def fraction_paired(
        self, method_a: str, method_b: str, metric: str, predicate: Callable[[float], bool]
    ) -> float:
        """Fraction of seeds whose paired difference ``metric(a) − metric(b)`` satisfies it."""
        return float(np.mean([bool(predicate(v)) for v in self.paired(method_a, method_b, metric)]))

    def quantile(self, method: str, metric: str, q: float) -> float:
        """The ``q``-quantile over seeds (``q=0.2``: a lower quantile, steadier than the min)."""
        return float(np.quantile(self.values(method, metric), q))

    def seeds(self) -> list[int]:
        """Every seed that any method has, sorted."""
        return sorted({s for per_seed in self.metrics.values() for s in per_seed})

    def resample(self, picks: Sequence[int]) -> Results:
        """The run as if its seeds had been ``seeds()[i] for i in picks`` (repeats allowed).

        Seeds are drawn jointly for every method, so per-seed pairs (``paired``, ``ratios``)
        stay paired; the drawn seeds are relabelled ``0, 1, ...`` in the order of ``picks``.
        """
        seeds = self.seeds()
        chosen = [seeds[i] for i in picks]
        return Results(
            {
                method: {j: per_seed[s] for j, s in enumerate(chosen) if s in per_seed}
                for method, per_seed in self.metrics.items()
            }
        )


CONFIDENCE = 0.95
"""Two-sided level of every claim's interval (a one-sided 2.5% error on each verdict)."""
N_BOOTSTRAP = 2000
"""Resampled seed sets drawn when the exact bootstrap has more distinct sets than this."""
BOOTSTRAP_SEED = 0
"""Seed of those draws: the same metrics always give the same interval."""

Verdict = Literal["held", "failed", "inconclusive"]


@dataclass(frozen=True)
class Claim:
    """A named predicate over aggregated metrics, with the paper's sentence it tests.

    ``threshold`` is a number, or a mapping scale → number when the bar differs by scale.
    ``scales`` lists the scales at which the claim is evaluated (a smoke run asserts the
    mechanism, quick/full the paper's claim). ``quantity`` names what ``metric`` measures, with
    its unit ("worst-seed validation MSE, Sven / best Adam"); it defaults to ``description``.

    :meth:`evaluate` gives the value, its bootstrap interval over seeds and a verdict: **held**
    when the whole interval is on the claimed side of the threshold, **failed** when the whole
    interval is on the other side, **inconclusive** when it straddles the threshold (more seeds
    needed). See :func:`bootstrap_interval` for what the interval means.
    """

    name: str
    statement: str
    metric: Callable[[Results], float]
    op: Op
    threshold: float | Mapping[str, float]
    scales: Sequence[str] = SCALES
    description: str = ""
    quantity: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(
                f"claim {self.name!r}: op must be one of {list(_OPS)}, got {self.op!r}"
            )
        if not self.quantity:
            object.__setattr__(self, "quantity", self.description)

    def threshold_at(self, scale: str) -> float:
        if isinstance(self.threshold, Mapping):
            return float(self.threshold[scale])
        return float(self.threshold)

    def evaluate(
        self, results: Results, scale: str, *, level: float = CONFIDENCE
    ) -> dict[str, Any]:
        """The claim's record: value, interval (``level``), threshold, op and verdict.

        ``held`` (kept for older readers) is ``verdict == "held"``. A non-finite value is
        ``failed``; interval ends are ``±inf`` where resampled values were not finite.
        """
        threshold = self.threshold_at(scale)
        value = float(self.metric(results))
        if math.isfinite(value):
            low, high = bootstrap_interval(results, self.metric, self.op, level=level)
            low, high = min(low, value), max(high, value)
        else:
            low, high = math.nan, math.nan
        result = verdict(self.op, threshold, value, (low, high))
        return {
            "name": self.name,
            "statement": self.statement,
            "description": self.description,
            "quantity": self.quantity,
            "op": self.op,
            "threshold": threshold,
            "value": value,
            "interval": [low, high],
            "interval_level": level,
            "n_seeds": len(results.seeds()),
            "verdict": result,
            "held": result == "held",
        }


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
}


def verdict(op: str, threshold: float, value: float, interval: tuple[float, float]) -> Verdict:
    """``held`` when the whole interval clears ``op threshold``, ``failed`` when none of it
    does, ``inconclusive`` when it straddles the threshold; a non-finite value ``failed``."""
    low, high = interval
    if not math.isfinite(value) or math.isnan(low) or math.isnan(high):
        return "failed"
    clears = _OPS[op]
    # ">"/">=": the low end must clear for "held"; if even the high end misses, "failed".
    worst, best = (low, high) if op in (">=", ">") else (high, low)
    if clears(worst, threshold):
        return "held"
    if not clears(best, threshold):
        return "failed"
    return "inconclusive"


def bootstrap_interval(
    results: Results,
    metric: Callable[[Results], float],
    op: str = ">=",
    *,
    level: float = CONFIDENCE,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over seeds, resampled jointly across methods.

    The seeds of the run are drawn with replacement (the same draw for every method, so paired
    comparisons stay paired) and ``metric`` is re-evaluated on each drawn set; the interval is
    the central ``level`` of those values. When the number of distinct drawn sets is at most
    ``n_boot`` (up to 7 seeds) they are enumerated exactly with their multinomial weights; else
    ``n_boot`` sets are drawn with a generator seeded by ``seed``. Either way the interval is a
    deterministic function of the metrics.

    What it means depends on the aggregate. For a mean, median, fraction or ratio of means it is
    the usual seed-to-seed uncertainty of that figure. For a worst-seed aggregate (max or min
    over seeds) a resampled set never holds a worse seed than the run, so the interval's end on
    the claimed side *is* the observed worst seed: ``held`` keeps its meaning "every seed of the
    run cleared the bar", and the other end says how many seeds carry a miss: ``failed`` when
    the bar is missed in all but ``(1 - level) / 2`` of the resampled sets (not down to one or
    two seeds), ``inconclusive`` otherwise. With one seed the interval is the point itself.

    A resampled set on which ``metric`` is not finite (or raises) counts against the claim: its
    value is ``-inf`` for ``>``/``>=`` claims and ``+inf`` for ``<``/``<=``.
    """
    n = len(results.seeds())
    if n <= 1:
        value = float(metric(results))
        return value, value
    bad = -math.inf if op in (">=", ">") else math.inf
    cache: dict[tuple[int, ...], float] = {}

    def evaluate(picks: tuple[int, ...]) -> float:
        if picks not in cache:
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    value = float(metric(results.resample(picks)))
            except (ArithmeticError, ValueError, KeyError, IndexError, TypeError):
                value = math.nan
            cache[picks] = value if math.isfinite(value) else bad
        return cache[picks]

    if math.comb(2 * n - 1, n) <= n_boot:
        draws = list(itertools.combinations_with_replacement(range(n), n))
        weights = np.array([_multinomial_weight(d, n) for d in draws])
    else:
        rng = np.random.default_rng(seed)
        draws = [tuple(sorted(row)) for row in rng.integers(0, n, size=(n_boot, n)).tolist()]
        weights = np.full(len(draws), 1.0 / len(draws))
    values = np.array([evaluate(d) for d in draws])
    tail = (1.0 - level) / 2.0
    return _weighted_lower(values, weights, tail), -_weighted_lower(-values, weights, tail)


def _multinomial_weight(draw: tuple[int, ...], n: int) -> float:
    """Probability of drawing the multiset ``draw`` in ``n`` uniform draws from ``n`` seeds."""
    ways = math.factorial(n)
    for count in Counter(draw).values():
        ways //= math.factorial(count)
    return ways / n**n


def _weighted_lower(values: np.ndarray, weights: np.ndarray, tail: float) -> float:
    """The smallest value whose cumulative weight reaches ``tail`` (inverted-CDF quantile)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, tail - 1e-12, side="left"))
    return float(values[order][min(index, len(order) - 1)])


@dataclass(frozen=True)
class Reproduction:
    """Everything the runner needs to reproduce one paper's claim at three scales."""

    name: str
    title: str
    arxiv: str
    spec: str
    configs: Mapping[str, Mapping[str, Any]]
    methods: Mapping[str, MethodFn] | Sequence[str]
    claims: Sequence[Claim]
    seeds: Mapping[str, int] = field(default_factory=lambda: {"smoke": 1, "quick": 3, "full": 5})
    seed_base: int = 100
    methods_by_scale: Mapping[str, Sequence[str]] = field(default_factory=dict)
    extras: Sequence[str] = ()
    modules: Sequence[str] = ()
    plot_x: str = "step"
    plot_y: Sequence[str] = ()
    plot_logy: bool = False
    summary: str = ""
    experiment: ExperimentFn | None = None
    batched: BatchedFn | None = None
    seed_batch: int | None = None

    def __post_init__(self) -> None:
        if self.seed_batch is not None and (
            isinstance(self.seed_batch, bool)
            or not isinstance(self.seed_batch, int)
            or self.seed_batch < 1
        ):
            raise ValueError(
                f"reproduction {self.name!r}: seed_batch must be a positive int or None, got "
                f"{self.seed_batch!r}"
            )
        missing = [s for s in SCALES if s not in self.configs]
        if missing:
            raise ValueError(f"reproduction {self.name!r}: configs missing scales {missing}")
        if not self.methods:
            raise ValueError(f"reproduction {self.name!r}: no methods")
        if (self.experiment is None) != isinstance(self.methods, Mapping):
            raise ValueError(
                f"reproduction {self.name!r}: give methods as a mapping name → run(config, seed, "
                "device), or as a list of arm names together with experiment="
            )
        for scale, names in self.methods_by_scale.items():
            bad = [m for m in names if m not in self.methods]
            if scale not in SCALES or bad:
                raise ValueError(
                    f"reproduction {self.name!r}: methods_by_scale[{scale!r}] names unknown "
                    f"scale or methods {bad}"
                )
        unknown = [c.name for c in self.claims if set(c.scales) - set(SCALES)]
        if unknown:
            raise ValueError(f"reproduction {self.name!r}: claims {unknown} name unknown scales")

    def seed_list(self, scale: str, n_seeds: int | None = None) -> list[int]:
        count = self.seeds[scale] if n_seeds is None else n_seeds
        return list(range(self.seed_base, self.seed_base + count))

    def methods_at(self, scale: str) -> list[str]:
        """The methods run at ``scale`` (all of them unless ``methods_by_scale`` narrows it)."""
        return list(self.methods_by_scale.get(scale, self.methods))

    def run_arms(
        self, arms: Sequence[str], config: Mapping[str, Any], seed: int, device: str
    ) -> dict[str, dict[str, Any]]:
        """Metrics of ``arms`` on one seed: one experiment call, or one call per method."""
        if self.experiment is None:
            methods: Mapping[str, MethodFn] = self.methods  # type: ignore[assignment]
            return {arm: dict(methods[arm](config, seed, device)) for arm in arms}
        out = self.experiment(config, seed, device, tuple(arms))
        missing = [arm for arm in arms if arm not in out]
        if missing:
            raise RuntimeError(f"reproduction {self.name!r}: the experiment returned no {missing}")
        return {arm: dict(out[arm]) for arm in arms}

    def run_seeds(
        self, arms: Sequence[str], config: Mapping[str, Any], seeds: Sequence[int], device: str
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """Metrics of ``arms`` on several seeds in one ``batched`` call: seed → arm → metrics."""
        if self.batched is None:
            raise RuntimeError(f"reproduction {self.name!r} declares no batched= function")
        out = self.batched(config, tuple(seeds), device, tuple(arms))
        missing = [(s, a) for s in seeds for a in arms if a not in out.get(s, {})]
        if missing:
            raise RuntimeError(
                f"reproduction {self.name!r}: the batched run returned no (seed, arm) {missing}"
            )
        return {s: {arm: dict(out[s][arm]) for arm in arms} for s in seeds}

    def claims_at(self, scale: str) -> list[Claim]:
        return [c for c in self.claims if scale in c.scales]


_REGISTRY: dict[str, Reproduction] = {}
_DISCOVERED = False


_REGISTERED_BY: dict[str, str] = {}  # name → the module that called register()


def register(reproduction: Reproduction) -> Reproduction:
    """Add a reproduction to the registry (names are unique)."""
    existing = _REGISTRY.get(reproduction.name)
    if existing is not None and existing is not reproduction:
        raise ValueError(f"a reproduction named {reproduction.name!r} is already registered")
    _REGISTRY[reproduction.name] = reproduction
    _REGISTERED_BY[reproduction.name] = sys._getframe(1).f_globals.get("__name__", "")
    return reproduction


def registered_by(name: str) -> str:
    """The module whose code registered ``name`` ("" if none did): a reproduction registered by
    a module of ``optforge.repro.papers`` is registered again by every process that discovers
    the papers, so a worker process finds it by name."""
    return _REGISTERED_BY.get(name, "")


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    from optforge.repro import papers

    for info in pkgutil.iter_modules(papers.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{papers.__name__}.{info.name}")
    _DISCOVERED = True


def get(name: str) -> Reproduction:
    """The registered reproduction called ``name``; ``KeyError`` lists the known names."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown reproduction {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_reproductions() -> list[Reproduction]:
    """Every registered reproduction, sorted by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
