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
"""

from __future__ import annotations

import importlib
import math
import pkgutil
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


@dataclass(frozen=True)
class Claim:
    """A named predicate over aggregated metrics, with the paper's sentence it tests.

    ``threshold`` is a number, or a mapping scale → number when the bar differs by scale.
    ``scales`` lists the scales at which the claim is evaluated (a smoke run asserts the
    mechanism, quick/full the paper's claim).
    """

    name: str
    statement: str
    metric: Callable[[Results], float]
    op: Op
    threshold: float | Mapping[str, float]
    scales: Sequence[str] = SCALES
    description: str = ""

    def threshold_at(self, scale: str) -> float:
        if isinstance(self.threshold, Mapping):
            return float(self.threshold[scale])
        return float(self.threshold)

    def evaluate(self, results: Results, scale: str) -> dict[str, Any]:
        """Return the claim's record: value, threshold, op and whether it held."""
        threshold = self.threshold_at(scale)
        value = float(self.metric(results))
        held = bool(math.isfinite(value) and _OPS[self.op](value, threshold))
        return {
            "name": self.name,
            "statement": self.statement,
            "description": self.description,
            "op": self.op,
            "threshold": threshold,
            "value": value,
            "held": held,
        }


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
}


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

    def __post_init__(self) -> None:
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

    def claims_at(self, scale: str) -> list[Claim]:
        return [c for c in self.claims if scale in c.scales]


_REGISTRY: dict[str, Reproduction] = {}
_DISCOVERED = False


def register(reproduction: Reproduction) -> Reproduction:
    """Add a reproduction to the registry (names are unique)."""
    existing = _REGISTRY.get(reproduction.name)
    if existing is not None and existing is not reproduction:
        raise ValueError(f"a reproduction named {reproduction.name!r} is already registered")
    _REGISTRY[reproduction.name] = reproduction
    return reproduction


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
