"""``optforge bench``: one reduced run of the suite into the store, rendered by the report."""

from __future__ import annotations

import json
import math

import pytest

from optforge import cli
from optforge.repro import RunStore
from optforge.repro import bench as bench_module
from optforge.repro.report import render_report


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.slow
def test_bench_quick_writes_ratios_to_the_store_and_the_report(tmp_path, capsys, monkeypatch):
    # Reduce the suite's sizes further so the test stays a few seconds (the sections and the
    # record are the real ones).
    monkeypatch.setitem(bench_module.SIZES, "quick", (16, 32))
    original_altmin, original_dfo = bench_module.altmin, bench_module.dfo
    monkeypatch.setattr(
        bench_module, "altmin", lambda device, n, k, **_: original_altmin(device, 80, 2)
    )
    monkeypatch.setattr(bench_module, "dfo", lambda dim, budget, seeds: original_dfo(3, 800, 1))
    code, out, _ = _cli(["bench", "--quick", "--json", "--out", str(tmp_path)], capsys)
    record = json.loads(out)
    assert code == 0 and record["all_held"]
    assert record["name"] == "bench" and record["scale"] == "quick"
    rows = record["metrics"]
    for size in ("small", "large"):
        for name in ("optimistic_sgd", "adagrad_norm", "noisy_adam", "langevin", "sven", "sso"):
            row = rows[f"step[{size}]/{name}"]["0"]
            assert row["ratio"] > 0 and math.isclose(
                row["ratio"], row["ms"] / row["baseline_ms"], rel_tol=1e-9
            )
    # Exact, machine-independent figures: saved bytes of WTA-CRS and checkpointing vs Linear.
    assert 0 < rows["wta/wta-0.1"]["0"]["ratio"] < rows["wta/wta-0.3"]["0"]["ratio"] < 1
    assert rows["wta/checkpoint"]["0"]["ratio"] < 1
    assert rows["altmin/robust-vs-exact"]["0"]["seconds"] > 0
    dfo = rows["dfo/cdsm"]["0"]
    assert dfo["evals_to_target"] > 0
    if record["config"]["cma_available"]:
        assert dfo["baseline_evals"] > 0
    [stored] = RunStore(tmp_path).latest()
    assert stored["run_id"] == record["run_id"]
    paths = render_report([stored], tmp_path)
    assert paths["plot:bench"].stat().st_size > 0
    assert "optforge performance suite" in paths["markdown"].read_text()


def test_bench_bad_device_is_one_line_exit_2(capsys):
    code, _, err = _cli(["bench", "--device", "tpu"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--device" in err
