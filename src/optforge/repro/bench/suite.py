"""``optforge bench``: run every registered section in one process and build its record.

The sections (:func:`optforge.repro.bench.registry.all_bench_entries`) run in order at the
scale's sizes; their rows become the "methods" of a record with the reproduction schema (name
``"bench"``, one pseudo-seed ``0``), built by the runner's
:func:`optforge.repro.runner.build_record`, so it goes into the results store and
``optforge report`` renders it with a bar plot of ``ratio``. The record's config holds every
section's sizes as ``<section>_<key>``, then ``repeats``, then the sections' environment facts.

Example::

    from optforge.repro.bench import run_bench

    record = run_bench("cpu", quick=True)
    record["metrics"]["step[small]/sven"]["0"]["ratio"]  # Sven's step time / Adam's
"""

from __future__ import annotations

import time
from typing import Any

import torch

from optforge.repro.bench.registry import all_bench_entries
from optforge.repro.runner import build_record

__all__ = ["run_bench"]


def run_bench(device: str = "cpu", *, quick: bool = False, repeats: int | None = None) -> dict:
    """Run the whole suite on ``device`` and return its record (see the module docstring).

    Args:
        device: ``"cpu"`` or a CUDA device.
        quick: the ``quick`` sizes (about a minute on one CPU thread) instead of ``full``.
        repeats: interleaved timing rounds (default 8 with ``quick``, 20 otherwise).
    """
    scale = "quick" if quick else "full"
    repeats = repeats or (8 if quick else 20)
    entries = all_bench_entries()
    start = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    for entry in entries:
        sizes = entry.config_for(scale, device)
        rows.update(entry.run(sizes, device, scale, repeats))
        config.update({f"{entry.name}_{key}": value for key, value in sizes.items()})
    wall = time.perf_counter() - start
    config["repeats"] = repeats
    for entry in entries:
        if entry.info is not None:
            config.update(entry.info())
    return build_record(
        name="bench",
        title="optforge performance suite (ratios vs the baselines, one process)",
        arxiv="n/a",
        spec="_anchors.md",
        scale=scale,
        seeds=[0],
        config=config,
        metrics={name: {0: row} for name, row in rows.items()},
        claims=[claim for entry in entries for claim in entry.claims],
        device=device,
        threads=torch.get_num_threads(),
        precision="float32 (altmin, dfo: float64)",
        effective_batch_size=config.get("step_batch"),
        executor="local",
        wall_time_s=wall,
        peak_memory_mb=(
            torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
        ),
        trials=[{"method": "bench", "seed": 0, "wall_time_s": wall, "peak_memory_mb": 0.0}],
        plot={"x": "step", "y": ["ratio"], "logy": True},
    )
