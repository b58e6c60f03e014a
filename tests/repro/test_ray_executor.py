"""``--executor ray``: the same records as the local executor (a local 2-CPU Ray), and one-line
errors for an unknown executor and for Ray not installed."""

from __future__ import annotations

import json
import sys

import pytest

from optforge import cli
from optforge.repro import get, run_reproduction
from optforge.repro.executors import make_executor


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _untimed(metrics):
    """Metrics without wall-clock measurements (those differ between any two runs)."""
    return {
        method: {
            seed: {k: v for k, v in values.items() if "time" not in k}
            for seed, values in per_seed.items()
        }
        for method, per_seed in metrics.items()
    }


@pytest.mark.slow
def test_ray_executor_gives_the_same_record_as_local(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")  # installed with the `ray` extra; CI installs `all`
    monkeypatch.setenv("RAY_ADDRESS", "")  # never join a cluster from the environment
    argv = ["reproduce", "gns", "--scale", "smoke", "--executor", "ray", "--workers", "2"]
    code, out, _ = _cli([*argv, "--out", str(tmp_path), "--json"], capsys)
    ray_record = json.loads(out)
    local_record = run_reproduction(get("gns"), "smoke")
    assert code == (0 if local_record["all_held"] else 1)
    assert ray_record["run_info"]["executor"] == "ray"
    assert ray_record["seeds"] == local_record["seeds"]
    assert ray_record["claims"] == local_record["claims"]
    assert _untimed(ray_record["metrics"]) == _untimed(local_record["metrics"])
    assert [(t["method"], t["seed"]) for t in ray_record["trials"]] == [
        (t["method"], t["seed"]) for t in local_record["trials"]
    ]


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"optforge\[ray\]"):
        make_executor("ray")
    code, _, err = _cli(["reproduce", "gns", "--scale", "smoke", "--executor", "ray"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'optforge[ray]'" in err


def test_unknown_executor_is_one_line_exit_2(capsys):
    code, _, err = _cli(["reproduce", "gns", "--scale", "smoke", "--executor", "dask"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "--executor must be one of local, processes, ray" in err
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        make_executor("ray", 0)
