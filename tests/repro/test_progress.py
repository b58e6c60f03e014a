"""Live progress (issue #25, section 3): a line per finished trial when the output is not a
terminal, an ETA on the terminal view, the record path on its own line, and Ctrl-C saying that
no record was written (exit status 130)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from optforge import cli
from optforge.repro import Claim, Reproduction, RunStore
from optforge.repro import registry as registry_module
from optforge.repro.job import Job, Schedule
from optforge.repro.runner import Request, Trial


def _score(config, seed, device):
    return {"score": float(np.random.default_rng(seed).random())}


def _interrupted(config, seed, device):
    raise KeyboardInterrupt


def _toy(name, method):
    return Reproduction(
        name=name,
        title="A toy paper",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods={"ours": method, "baseline": _score},
        claims=[Claim("ok", "s", lambda r: r.mean("baseline", "score"), ">=", 0.0)],
        seeds={"smoke": 2, "quick": 2, "full": 2},
    )


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(registry_module._REGISTRY, "toy-progress", _toy("toy-progress", _score))
    monkeypatch.setitem(registry_module._REGISTRY, "toy-ctrl-c", _toy("toy-ctrl-c", _interrupted))


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_not_a_terminal_prints_a_line_per_trial_then_the_table_and_the_path(tmp_path, capsys, toys):
    code, out, _ = _cli(
        ["reproduce", "toy-progress", "--scale", "smoke", "--out", str(tmp_path)], capsys
    )
    assert code == 0
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 4  # 2 methods × 2 seeds
    assert progress[0].startswith("[1/4] toy-progress [smoke] ")
    assert progress[-1].startswith("[4/4] toy-progress [smoke] ")
    for line in progress:
        assert " seed 10" in line and " s · elapsed " in line and " · ETA " in line
    assert lines.index(progress[-1]) < next(
        i for i, line in enumerate(lines) if "A toy paper" in line
    )
    [record_line] = [line for line in lines if line.startswith("record: ")]
    path = Path(record_line.removeprefix("record: "))
    assert path.exists() and json.loads(path.read_text())["name"] == "toy-progress"


def test_ctrl_c_says_no_record_was_written_and_exits_130(tmp_path, capsys, toys):
    code, _, err = _cli(
        ["reproduce", "toy-ctrl-c", "--scale", "smoke", "--out", str(tmp_path)], capsys
    )
    assert code == 130
    assert err.strip() == "optforge: aborted, no record written"
    assert RunStore(tmp_path).latest() == []


def test_terminal_view_shows_the_eta_and_each_workers_trial(toys):
    from optforge.repro import get

    job = Job([Request(get("toy-progress"), "smoke")])
    trials = Request(get("toy-progress"), "smoke").trials()
    job.schedule = Schedule(trials, {t: 2.0 for t in trials})
    job.schedule.only(lambda t: True, 2)
    job.schedule.next_for(0)
    job.schedule.next_for(1)
    view = cli._JobView(Console(file=io.StringIO(), width=200))
    view.job = job
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=True, color_system=None).print(view)
    text = buffer.getvalue()
    assert "0/4 trials" in text and "ETA 0:0" in text and "2 worker(s)" in text
    assert "worker 1: toy-progress [smoke]" in text and "worker 2: toy-progress [smoke]" in text


def test_eta_is_the_work_left_over_the_workers():
    trials = [Trial("t", ("m",), "quick", seed, "cpu", 1) for seed in range(4)]
    schedule = Schedule(trials, {t: 10.0 for t in trials}).only(lambda t: True, 2)
    assert schedule.progress().eta_s == pytest.approx(20.0)  # 40 s of work on 2 workers
    first = schedule.next_for(0)
    schedule.finish(first)  # this job's trials ran much faster than the prior: recalibrate
    assert schedule.progress().eta_s < 1.0
    unknown = Schedule(trials, {}).only(lambda t: True, 2)
    assert unknown.progress().eta_s is None  # nothing measured yet: no ETA rather than a guess
    # A kind never measured counts the finished trials' time per arm, times its own arms.
    experiment = Trial("e", ("a", "b"), "quick", 1, "cpu", 1)
    single = Trial("s", ("m",), "quick", 1, "cpu", 1)
    mixed = Schedule([experiment, single], {}).only(lambda t: True, 1)
    first = mixed.next_for(0)
    assert first is experiment  # more arms first
    mixed.running[first] = (0, mixed.running[first][1] - 10.0)  # it took 10 s: 5 s per arm
    mixed.finish(first)
    assert mixed.progress().eta_s == pytest.approx(5.0, abs=0.5)


@pytest.mark.slow
def test_reproduce_gns_piped_prints_a_progress_line_per_trial_before_the_table(tmp_path):
    """The issue's acceptance check: `optforge reproduce gns --scale smoke | cat`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "optforge.cli",
            "reproduce",
            "gns",
            "--scale",
            "smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1/1] gns [smoke] ") and "ETA" in lines[0]
    assert any("Gradient-Normalized Smoothness" in line for line in lines[1:])
    [record_line] = [line for line in lines if line.startswith("record: ")]
    assert Path(record_line.removeprefix("record: ")).exists()
