"""``optforge bench``: the registry of sections, the step cases, and one reduced run of the suite
into the store, rendered by the report."""

from __future__ import annotations

import json
import math

import pytest

from optforge import cli
from optforge.repro import RunStore
from optforge.repro.bench import (
    BenchEntry,
    all_bench_entries,
    altmin,
    get_bench,
    optimizer_steps,
    register_bench,
    register_step,
    step_cases,
    step_time,
)
from optforge.repro.bench import registry as bench_registry
from optforge.repro.report import render_report

OPTIMIZERS = (
    "optimistic_sgd",
    "adagrad_norm",
    "noisy_adam",
    "langevin",
    "adagrad",
    "adadagrad",
    "adadagrad_ip",
    "adadagrad_callable",
    "adadagrad_per_example",
    "sven",
    "sven_jacobian",
    "sgd",
    "sso",
    "sso_armijo",
)


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_sections_and_step_cases_are_discovered_in_suite_order():
    assert [e.name for e in all_bench_entries()] == ["step", "wta", "altmin", "dfo"]
    assert [c.name for c in step_cases()] == list(OPTIMIZERS)
    claims = [c.name for e in all_bench_entries() for c in e.claims]
    assert claims == ["wta-saves-activation-memory", "robust-altmin-reaches-target"]


def test_entry_config_applies_the_device_overrides():
    step = get_bench("step")
    assert step.config_for("quick", "cpu") == {"sizes": (64, 512), "batch": 64}
    assert step.config_for("full", "cuda:1") == {"sizes": (1024, 4096), "batch": 64}
    assert get_bench("altmin").config_for("full", "cuda") == get_bench("altmin").configs["full"]


def test_registry_rejects_duplicates_and_missing_scales(monkeypatch):
    all_bench_entries()  # discover the sections before the registry is swapped for a copy
    monkeypatch.setattr(bench_registry, "_REGISTRY", dict(bench_registry._REGISTRY))
    with pytest.raises(ValueError, match="configs missing scales"):
        BenchEntry(name="x", title="x", run=lambda *a: {}, configs={"quick": {}})
    entry = BenchEntry(name="x", title="x", run=lambda *a: {}, configs={"quick": {}, "full": {}})
    assert register_bench(entry) is entry and register_bench(entry) is entry
    with pytest.raises(ValueError, match="already registered"):
        register_bench(BenchEntry(name="x", title="y", run=entry.run, configs=entry.configs))
    with pytest.raises(KeyError, match="unknown bench entry"):
        get_bench("no-such-section")


def test_a_registered_step_case_gets_its_rows_without_editing_a_list(monkeypatch):
    import torch

    step_cases()  # discover the cases before the registry is swapped for a copy
    monkeypatch.setattr(step_time, "_CASES", dict(step_time._CASES))

    @register_step("plain_sgd", order=1000)
    def plain_sgd(problem):
        return step_time.first_order_step(problem, lambda m: torch.optim.SGD(m.parameters(), 0.1))

    with pytest.raises(ValueError, match="already registered"):
        register_step("adam")(plain_sgd)
    assert step_cases()[-1].name == "plain_sgd"
    rows = optimizer_steps("cpu", (8, 16), repeats=1)
    assert list(rows)[-1] == "step[large]/plain_sgd"
    assert {name.split("/")[1] for name in rows} == {*OPTIMIZERS, "plain_sgd"}
    assert all(row["params"] > 0 and row["ratio"] > 0 for row in rows.values())


@pytest.mark.slow
def test_altmin_section_times_softimpute_from_the_baselines_module():
    rows = altmin("cpu", 80, 2)
    assert list(rows) == ["altmin/robust-vs-exact", "altmin/robust-vs-softimpute"]
    exact = rows["altmin/robust-vs-exact"]
    assert exact["reached"] == 1.0 and 0 < exact["sweeps"] <= 30 and exact["seconds"] > 0
    soft = rows["altmin/robust-vs-softimpute"]
    assert soft["seconds"] > 0 and set(soft) == {"ratio", "seconds", "baseline_seconds"}


@pytest.mark.slow
def test_bench_quick_writes_ratios_to_the_store_and_the_report(tmp_path, capsys, monkeypatch):
    # Reduce the suite's sizes further so the test stays a few seconds (the sections and the
    # record are the real ones).
    monkeypatch.setitem(get_bench("step").configs["quick"], "sizes", (16, 32))
    monkeypatch.setitem(get_bench("altmin").configs, "quick", {"n": 80, "k": 2})
    monkeypatch.setitem(
        get_bench("dfo").configs,
        "quick",
        {"problems": ("rosen2",), "methods": ("cdsm", "cdsm-official"), "seeds": 1},
    )
    code, out, _ = _cli(["bench", "--quick", "--json", "--out", str(tmp_path)], capsys)
    record = json.loads(out)
    assert code == 0 and record["all_held"]
    assert record["name"] == "bench" and record["scale"] == "quick"
    assert list(record["config"]) == [
        "step_sizes", "step_batch", "wta_width", "wta_batch", "altmin_n", "altmin_k",
        "dfo_problems", "dfo_methods", "dfo_seeds", "repeats", "cma_available",
        "nevergrad_available", "PyNomad_available",
    ]  # fmt: skip
    assert record["config"]["step_sizes"] == [16, 32] and record["config"]["repeats"] == 8
    assert record["run_info"]["effective_batch_size"] == 64
    assert record["trials"] == [
        {"method": "bench", "seed": 0, "wall_time_s": record["run_info"]["wall_time_s"],
         "peak_memory_mb": 0.0}
    ]  # fmt: skip
    rows = record["metrics"]
    for size in ("small", "large"):
        for name in OPTIMIZERS:
            row = rows[f"step[{size}]/{name}"]["0"]
            assert row["ratio"] > 0 and math.isclose(
                row["ratio"], row["ms"] / row["baseline_ms"], rel_tol=1e-9
            )
    # Exact, machine-independent figures: saved bytes of WTA-CRS and checkpointing vs Linear.
    assert 0 < rows["wta/wta-0.1"]["0"]["ratio"] < rows["wta/wta-0.3"]["0"]["ratio"] < 1
    assert rows["wta/checkpoint"]["0"]["ratio"] < 1
    assert rows["altmin/robust-vs-exact"]["0"]["seconds"] > 0
    assert "altmin/robust-vs-softimpute" not in rows  # full scale only
    dfo = rows["dfo/rosen2/cdsm"]["0"]
    assert 0 < dfo["evals_to_target"] <= dfo["budget"] and dfo["reached"] == 1.0
    [stored] = RunStore(tmp_path).latest()
    assert stored["run_id"] == record["run_id"]
    paths = render_report([stored], tmp_path)
    assert paths["plot:bench"].stat().st_size > 0
    assert "optforge performance suite" in paths["markdown"].read_text()


def test_bench_bad_device_is_one_line_exit_2(capsys):
    code, _, err = _cli(["bench", "--device", "tpu"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--device" in err


def test_old_import_path_keeps_working():
    from optforge.repro.bench import run_bench, time_interleaved
    from optforge.repro.timing import time_interleaved as timing_time_interleaved

    assert callable(run_bench) and time_interleaved is timing_time_interleaved
