"""The memory–time frontier benchmark (``benchmarks/wta_crs.py``) at a tiny size: record format,
the ``+recompute`` variants, the realistic per-layer op count and the ``--table`` output."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "wta_crs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("wta_crs_frontier_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def record(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("frontier")
    argv = sys.argv
    flags = "--models llama --width 32 --depth 1 --batch 2 --seq 16 --vocab 32 --repeats 1"
    flags += f" --layer-rows 64 --layer-width 16 --json {out / 'r.json'} --plot {out / 'r.png'}"
    sys.argv = [str(_PATH), *flags.split()]
    try:
        bench.main()
    finally:
        sys.argv = argv
    assert (out / "r.png").stat().st_size > 0
    return json.loads((out / "r.json").read_text()), out / "r.json"


def test_recompute_variants_on_llama_only(bench, record):
    rec, _ = record
    rows = rec["models"]["llama"]
    assert set(rows) == set(bench.VARIANTS)
    for ratio in ("0.3", "0.1"):
        plain, recomputed = rows[f"wta-{ratio}"], rows[f"wta-{ratio}+recompute"]
        # the recompute opt-in keeps strictly fewer bytes than sampling alone, same row format
        assert recomputed["saved_bytes"] < plain["saved_bytes"]
        assert set(recomputed) == set(plain)
        assert recomputed["host_syncs"] == 0
    # where recompute replaces nothing it is not run, and the record says why
    for name in ("bert", "relu-mlp"):
        assert not any(v.endswith("+recompute") for v in bench.variants_of(name))
        assert set(bench.NOT_APPLICABLE[name]) == {"wta-0.3+recompute", "wta-0.1+recompute"}
    assert rec["not_applicable"] == {}  # only llama was measured


def test_layer_section_counts_ops_in_the_model(bench, record):
    rec, _ = record
    ops = rec["layer_ops"]
    assert ops["linear"] == 12 and ops["wta-0.3"] <= 28  # the lone layer (regression guard)
    assert ops["llama_converted_linears"] == 7  # one block: q/k/v/o, gate/up/down
    rows = rec["models"]["llama"]
    extra = (rows["wta-0.3"]["aten_ops"] - rows["linear"]["aten_ops"]) / 7
    assert ops["llama_extra_ops_per_converted_linear_wta-0.3"] == extra
    # shared samples (q/k/v; gate/up) make a converted linear cheaper in a model than alone
    assert 0 < extra < ops["wta-0.3"] - ops["linear"]


def test_table_from_record(bench, record, capsys):
    rec, path = record
    argv = sys.argv
    sys.argv = [str(_PATH), "--table", str(path)]
    try:
        bench.main()
    finally:
        sys.argv = argv
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| llama")]
    assert len(lines) == len(bench.VARIANTS) - 1  # every variant but the baseline
    row = next(line for line in lines if "| WTA@0.3 + recompute |" in line)
    assert f"| {rec['models']['llama']['wta-0.3+recompute']['saved_ratio']:.3f} |" in row
    rec["not_applicable"] = {"bert": bench.NOT_APPLICABLE["bert"]}
    assert "bert, WTA@0.1 + recompute: not run (recompute=True" in bench.frontier_table(rec)
