"""The registry of ``optforge bench`` sections, declared next to what they measure.

A section is one :class:`BenchEntry`: a name (the prefix of its rows, ``"wta"`` gives rows
``wta/<variant>``), the function that measures, its sizes per scale and the claims about its
rows. A module in ``optforge/repro/bench/`` declares its section and passes it to
:func:`register_bench`; the modules of the package are discovered when the suite runs (as the
reproductions of ``repro/papers/`` are), so adding a section edits no shared file::

    def run(config, device, scale, repeats):  # -> {row name: {metric: float}}
        seconds = time_interleaved({"ours": ours, "baseline": base}, device, repeats)
        return {"mine/ours": {"ratio": seconds["ours"] / seconds["baseline"]}}

    register_bench(
        BenchEntry(
            name="mine",
            title="one step of ours vs the baseline",
            run=run,
            configs={"quick": {"width": 64}, "full": {"width": 512}},
            device_configs={"cuda": {"width": 4096}},  # overrides on a CUDA device
            claims=[Claim(...)],  # over the rows, evaluated like a reproduction's
            order=50,  # position of the section in the suite and its table
        )
    )

Every config value goes into the bench record's ``config`` as ``<name>_<key>``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optforge.repro.registry import Claim

__all__ = [
    "BENCH_SCALES",
    "BenchEntry",
    "BenchFn",
    "all_bench_entries",
    "get_bench",
    "register_bench",
]

BENCH_SCALES: tuple[str, ...] = ("quick", "full")
BenchFn = Callable[[Mapping[str, Any], str, str, int], Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class BenchEntry:
    """One section of the performance suite.

    Attributes:
        name: the section's name: the prefix of its rows and of its keys in the record's config.
        title: one line, what is measured against what.
        run: ``run(config, device, scale, repeats) -> {row: {metric: value}}``; a row's
            ``ratio`` is its cost over the baseline's (plotted by the report).
        configs: scale (``"quick"``, ``"full"``) → keyword sizes of the measurement.
        device_configs: device type (``"cuda"``) → values replacing those of ``configs``.
        claims: claims over the rows (method = row name, seed ``0``).
        info: extra facts of the environment to record in the config (e.g. whether an
            optional baseline is installed), added after the sizes.
        order: position of the section in the suite (ascending, then by name).
    """

    name: str
    title: str
    run: BenchFn
    configs: Mapping[str, Mapping[str, Any]]
    device_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    claims: Sequence[Claim] = ()
    info: Callable[[], Mapping[str, Any]] | None = None
    order: int = 100

    def __post_init__(self) -> None:
        missing = [s for s in BENCH_SCALES if s not in self.configs]
        if missing:
            raise ValueError(f"bench entry {self.name!r}: configs missing scales {missing}")

    def config_for(self, scale: str, device: str) -> dict[str, Any]:
        """The sizes at ``scale`` on ``device`` (``device_configs`` of its type applied)."""
        return {**self.configs[scale], **self.device_configs.get(device.split(":")[0], {})}


_REGISTRY: dict[str, BenchEntry] = {}
_DISCOVERED = False


def register_bench(entry: BenchEntry) -> BenchEntry:
    """Add a section to the suite (names are unique)."""
    existing = _REGISTRY.get(entry.name)
    if existing is not None and existing is not entry:
        raise ValueError(f"a bench entry named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get_bench(name: str) -> BenchEntry:
    """The registered section called ``name``; ``KeyError`` lists the known names."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown bench entry {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_bench_entries() -> list[BenchEntry]:
    """Every registered section, in suite order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda e: (e.order, e.name))


def _discover() -> None:
    """Import every module of ``optforge.repro.bench`` (sub-packages included) once."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    from optforge.repro import bench

    for info in pkgutil.walk_packages(bench.__path__, prefix=f"{bench.__name__}."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    _DISCOVERED = True
