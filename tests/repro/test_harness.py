"""Harness: registry, claims, runner record, append-only store, report and CLI exit codes."""

import json
import sqlite3

import numpy as np
import pytest

from optforge import cli
from optforge.repro import (
    Claim,
    ProcessesExecutor,
    Reproduction,
    Results,
    RunStore,
    get,
    register,
    run_reproduction,
)
from optforge.repro import registry as registry_module
from optforge.repro.report import render_report


def _toy_method(offset):
    def run(config, seed, device):
        rng = np.random.default_rng(seed)
        steps = list(range(config["steps"]))
        return {
            "score": offset + 0.01 * rng.standard_normal(),
            "step": steps,
            "loss": [float(np.exp(-s / 3) + offset) for s in steps],
        }

    return run


def _toy(threshold=0.5, name="toy"):
    return Reproduction(
        name=name,
        title="A toy paper",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {"steps": 3}, "quick": {"steps": 5}, "full": {"steps": 8}},
        methods={"ours": _toy_method(1.0), "baseline": _toy_method(0.0)},
        claims=[
            Claim(
                name="ours-beats-baseline",
                statement="Ours scores higher.",
                metric=lambda r: r.mean("ours", "score") - r.mean("baseline", "score"),
                op=">=",
                threshold={"smoke": threshold, "quick": threshold, "full": threshold},
            )
        ],
        seeds={"smoke": 2, "quick": 3, "full": 4},
        plot_y=("loss",),
    )


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry_module._REGISTRY, "toy", _toy())
    monkeypatch.setitem(registry_module._REGISTRY, "toy-failing", _toy(5.0, "toy-failing"))
    return get("toy")


def test_results_aggregate_over_seeds():
    r = Results({"a": {0: {"x": 1.0}, 1: {"x": 3.0}}, "b": {0: {"x": 0.0}, 1: {"x": 1.0}}})
    assert r.mean("a", "x") == 2.0 and r.min("a", "x") == 1.0 and r.max("a", "x") == 3.0
    assert r.fraction("a", "x", lambda v: v > 2) == 0.5
    assert list(r.paired("a", "b", "x")) == [1.0, 2.0]
    with pytest.raises(KeyError, match="no method"):
        r.values("c", "x")
    with pytest.raises(KeyError, match="no metric"):
        r.values("a", "y")


def test_claim_uses_per_scale_thresholds_and_nan_never_holds():
    claim = Claim("c", "s", lambda r: float("nan"), ">=", {"smoke": 0.0, "quick": 1.0, "full": 2})
    r = Results({})
    assert claim.threshold_at("quick") == 1.0
    assert claim.evaluate(r, "smoke")["held"] is False
    ok = Claim("c", "s", lambda r: 1.5, "<", 2.0)
    assert ok.evaluate(r, "full")["held"] is True


def test_reproduction_validates_its_declaration():
    with pytest.raises(ValueError, match="missing scales"):
        Reproduction("x", "t", "a", "s", {"quick": {}}, {"m": _toy_method(0)}, [])
    with pytest.raises(ValueError, match="already registered"):
        register(_toy(name=get("gradient-noise").name))


def test_unknown_reproduction_lists_known_names():
    with pytest.raises(KeyError, match="gradient-noise"):
        get("no-such-paper")


def test_runner_record_has_the_schema(toy):
    record = run_reproduction(toy, "quick", n_seeds=2)
    assert record["seeds"] == [100, 101]
    assert set(record["metrics"]) == {"ours", "baseline"}
    assert set(record["metrics"]["ours"]) == {"100", "101"}
    info = record["run_info"]
    for key in (
        "git_revision",
        "optforge_version",
        "torch_version",
        "device",
        "threads",
        "precision",
        "effective_batch_size",
        "world_size",
        "wall_time_s",
        "peak_memory_mb",
    ):
        assert key in info
    assert record["claims"][0]["held"] and record["all_held"]
    assert len(record["trials"]) == 4
    json.dumps(record, allow_nan=False)


def test_runner_is_deterministic_under_seeds(toy):
    a = run_reproduction(toy, "smoke")
    b = run_reproduction(toy, "smoke")
    assert a["metrics"] == b["metrics"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scale": "huge"}, "--scale"), ({"n_seeds": 0}, "--seeds"), ({"device": "tpu"}, "--device")],
)
def test_runner_rejects_bad_requests(toy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_reproduction(toy, **{"scale": "smoke", **kwargs})


def test_store_is_append_only_and_returns_the_latest(tmp_path, toy):
    store = RunStore(tmp_path)
    first = run_reproduction(toy, "smoke")
    second = run_reproduction(toy, "smoke")
    p1, p2 = store.append(first), store.append(second)
    assert p1.exists() and p2.exists() and p1 != p2
    assert [r["run_id"] for r in store.latest()] == [second["run_id"]]
    assert [r["run_id"] for r in store.history("toy")] == [first["run_id"], second["run_id"]]
    with sqlite3.connect(store.database) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("DELETE FROM runs")
    with sqlite3.connect(store.database) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("UPDATE runs SET all_held = 0")


def test_report_writes_markdown_html_and_a_png_per_reproduction(tmp_path, toy):
    store = RunStore(tmp_path)
    store.append(run_reproduction(toy, "smoke"))
    store.append(run_reproduction(get("toy-failing"), "smoke"))
    paths = render_report(store.latest(), tmp_path)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    assert "ours-beats-baseline" in md and "FAILED" in md and "held" in md
    assert "data:image/png;base64," in html
    for name in ("toy", "toy-failing"):
        png = tmp_path / "plots" / f"{name}-smoke.png"  # one plot per (name, scale)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["reproduce", "no-such-paper"], "unknown reproduction"),
        (["reproduce", "toy", "--seeds", "0"], "--seeds"),
        (["reproduce", "toy", "--scale", "huge"], "--scale"),
        (["reproduce", "toy", "--device", "tpu"], "--device"),
        (["reproduce", "toy", "--bogus"], "--bogus"),
        (["reproduce"], "reproduction name"),
        (["reproduce", "toy", "--all"], "not both"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, match, capsys, toy):
    code, _out, err = _cli(argv, capsys)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_reproduce_json_exit_codes_and_report(tmp_path, capsys, toy):
    code, out, _ = _cli(
        ["reproduce", "toy", "--scale", "smoke", "--out", str(tmp_path), "--json"], capsys
    )
    assert code == 0
    record = json.loads(out)
    assert record["name"] == "toy" and record["all_held"]
    code, out, _ = _cli(
        ["reproduce", "toy", "toy-failing", "--scale", "smoke", "--out", str(tmp_path), "--json"],
        capsys,
    )
    assert code == 1
    assert [r["name"] for r in json.loads(out)] == ["toy", "toy-failing"]
    code, out, _ = _cli(["report", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()


def test_cli_list_json(capsys, toy):
    code, out, _ = _cli(["list", "--json"], capsys)
    assert code == 0
    names = [row["name"] for row in json.loads(out)]
    assert "gradient-noise" in names
    entry = next(row for row in json.loads(out) if row["name"] == "gradient-noise")
    assert entry["arxiv"] == "1511.06807" and entry["scales"] == ["smoke", "quick", "full"]


def test_cli_report_on_an_empty_store_is_an_error(tmp_path, capsys):
    code, _, err = _cli(["report", "--out", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no runs" in err


def test_processes_executor_matches_local():
    reproduction = get("gns")  # the fastest smoke scale
    local = run_reproduction(reproduction, "smoke")
    pooled = run_reproduction(reproduction, "smoke", executor=ProcessesExecutor(workers=2))

    def untimed(metrics):  # wall-clock metrics differ between runs by nature
        return {
            method: {seed: {k: v for k, v in m.items() if "time" not in k} for seed, m in d.items()}
            for method, d in metrics.items()
        }

    assert untimed(pooled["metrics"]) == untimed(local["metrics"])
    assert pooled["run_info"]["executor"] == "processes"


def test_workers_need_the_processes_executor(capsys):
    # --workers alone now picks the processes pool (#34); the in-process executor runs one.
    code, _, err = _cli(
        ["reproduce", "gradient-noise", "--executor", "local", "--workers", "2"], capsys
    )
    assert code == 2 and "--workers" in err
