"""The ``torch.compile`` benchmark (``benchmarks/wta_crs_compile.py``) at a tiny size: record
format, the compiled layer's operation count and the ``--table`` output."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend (inductor) needs a C++ compiler",
)

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "wta_crs_compile.py"


def _load():
    spec = importlib.util.spec_from_file_location("wta_crs_compile_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_and_table(tmp_path, capsys):
    bench = _load()
    flags = "--steps 40 --configs wta-0.25 --layer-rows 128 --layer-width 16 --repeats 1"
    flags += " --llama-width 0"
    argv = sys.argv
    sys.argv = [str(_PATH), *flags.split(), "--json", str(tmp_path / "r.json")]
    try:
        bench.main()
    finally:
        sys.argv = argv
    record = json.loads((tmp_path / "r.json").read_text())
    assert set(record["bias"]) == {"wta-0.25/eager", "wta-0.25/inductor"}
    assert all(r["entries"] == 32 and r["steps"] == 40 for r in record["bias"].values())
    layer = record["layer"]
    assert layer["linear/eager"]["ops"] == 12 and layer["wta-0.3/eager"]["ops"] == 28
    compiled = layer["wta-0.3/compiled"]["ops_by_name"]
    # one fused scoring kernel, the sampler's extern ops once, and the tie to the sample
    assert compiled["cpp_fused_fmax_full_linalg_vector_norm_0"] == 1
    assert compiled["aten::sort"] == compiled["aten::searchsorted"] == 1
    assert compiled["optforge::wta_crs_tie_to_sample"] == 1
    capsys.readouterr()
    sys.argv = [str(_PATH), "--table", str(tmp_path / "r.json")]
    try:
        bench.main()
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "| wta-0.25 | inductor | 40 |" in out and "| wta-0.3 | compiled |" in out
