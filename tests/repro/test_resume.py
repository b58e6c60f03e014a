"""Resumable jobs (issue #34): an up-to-date reproduction is skipped (one line; ``--fresh``
reruns it), a killed job reuses its finished trials, never those of other code, and the record
it writes is the one an uninterrupted run writes."""

import numpy as np
import pytest

from optforge import cli
from optforge.repro import Claim, Reproduction, RunStore, get
from optforge.repro import job as job_module
from optforge.repro import registry as registry_module
from optforge.repro.job import Job
from optforge.repro.runner import Request, environment_info

CALLS: list[tuple[str, int]] = []
INTERRUPT_AT: dict[str, int | None] = {"seed": None}


def _method(name):
    def run(config, seed, device):
        if name == "late" and seed == INTERRUPT_AT["seed"]:
            raise KeyboardInterrupt  # a Ctrl-C (or a kill) in the middle of the job
        CALLS.append((name, seed))
        rng = np.random.default_rng(seed)
        return {"score": float(rng.random()), "curve": [float(v) for v in rng.random(3)]}

    return run


@pytest.fixture
def toy(monkeypatch):
    reproduction = Reproduction(
        name="toy-resume",
        title="t",
        arxiv="0",
        spec="none.md",
        configs={"smoke": {"k": 1}, "quick": {"k": 2}, "full": {"k": 3}},
        methods={"early": _method("early"), "late": _method("late")},
        claims=[Claim("c", "s", lambda r: r.mean("early", "score"), ">=", 0.0)],
        seeds={"smoke": 3, "quick": 3, "full": 3},
    )
    monkeypatch.setitem(registry_module._REGISTRY, "toy-resume", reproduction)
    env = environment_info("cpu", 1)  # pinned: other work may edit the tree during the test
    monkeypatch.setattr(job_module, "environment_info", lambda device, threads: dict(env))
    CALLS.clear()
    INTERRUPT_AT["seed"] = None
    return reproduction


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_an_up_to_date_reproduction_is_skipped_in_one_line_and_fresh_reruns_it(
    tmp_path, capsys, toy
):
    argv = ["reproduce", "toy-resume", "--scale", "smoke", "--out", str(tmp_path)]
    assert _cli(argv, capsys)[0] == 0
    assert len(CALLS) == 6
    code, out, _ = _cli(argv, capsys)
    assert code == 0 and len(CALLS) == 6  # nothing ran
    [line] = [line for line in out.splitlines() if "up to date" in line]
    assert line.startswith("toy-resume [smoke]: up to date") and "--fresh" in line
    assert len(RunStore(tmp_path).history("toy-resume")) == 1
    code, out, _ = _cli([*argv, "--fresh"], capsys)
    assert code == 0 and len(CALLS) == 12 and "up to date" not in out
    assert len(RunStore(tmp_path).history("toy-resume")) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"source_digest": "other-code"},
        {"git_revision": "0" * 40},
        {"packages": {"torch": "0.0"}},
        {"threads": 2},
    ],
)
def test_other_code_packages_or_settings_are_rerun(tmp_path, toy, monkeypatch, change):
    store = RunStore(tmp_path)
    Job([Request(toy, "smoke")], store=store).run()
    env = {**job_module.environment_info("cpu", 1), **change}
    monkeypatch.setattr(job_module, "environment_info", lambda device, threads: dict(env))
    [outcome] = Job([Request(toy, "smoke")], store=store).run()
    assert not outcome.skipped and len(CALLS) == 12
    [other_seeds] = Job([Request(toy, "smoke", n_seeds=2)], store=store).run()
    assert not other_seeds.skipped


def test_a_killed_job_reuses_its_finished_trials_and_writes_the_uninterrupted_record(
    tmp_path, capsys, toy
):
    reference = Job([Request(toy, "smoke")]).run()[0].record
    CALLS.clear()
    INTERRUPT_AT["seed"] = 101  # `late` on seed 101 is interrupted
    argv = ["reproduce", "toy-resume", "--scale", "smoke", "--out", str(tmp_path)]
    code, _, err = _cli(argv, capsys)
    assert code == 130 and "no record written" in err
    finished = set(CALLS)
    assert finished and ("late", 101) not in finished
    assert RunStore(tmp_path).latest() == []
    INTERRUPT_AT["seed"] = None
    CALLS.clear()
    code, out, _ = _cli(argv, capsys)
    assert code == 0
    everything = {(m, s) for m in ("early", "late") for s in (100, 101, 102)}
    assert sorted(CALLS) == sorted(everything - finished)  # only the unfinished trials ran
    assert f"{len(finished)} trial(s) reused" in out
    [record] = RunStore(tmp_path).latest()
    assert record["metrics"] == reference["metrics"]
    assert record["claims"] == reference["claims"]
    assert record["run_info"]["resumed_trials"] == len(finished)
    assert not (tmp_path / "scratch" / "toy-resume").exists()  # cleared with the record


def test_kept_trials_are_never_mixed_into_a_run_of_other_code(tmp_path, toy, monkeypatch):
    store = RunStore(tmp_path)
    INTERRUPT_AT["seed"] = 100
    with pytest.raises(KeyboardInterrupt):
        Job([Request(toy, "smoke")], store=store).run()
    kept = len(CALLS)
    assert kept >= 1  # finished trials kept in the scratch area
    INTERRUPT_AT["seed"] = None
    env = {**job_module.environment_info("cpu", 1), "source_digest": "edited-code"}
    monkeypatch.setattr(job_module, "environment_info", lambda device, threads: dict(env))
    CALLS.clear()
    [outcome] = Job([Request(toy, "smoke")], store=store).run()
    assert len(CALLS) == 6 and outcome.resumed_trials == 0  # everything ran again


def test_a_failing_reproduction_does_not_stop_the_others(tmp_path, toy, monkeypatch):
    def broken(config, seed, device):
        raise ValueError("bad input in the paper module")

    bad = Reproduction(
        name="toy-broken",
        title="t",
        arxiv="0",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods={"m": broken},
        claims=[Claim("c", "s", lambda r: 1.0, ">=", 0.0)],
    )
    monkeypatch.setitem(registry_module._REGISTRY, "toy-broken", bad)
    outcomes = Job(
        [Request(bad, "smoke"), Request(get("toy-resume"), "smoke")], store=RunStore(tmp_path)
    ).run()
    assert "ValueError: bad input" in outcomes[0].error and outcomes[0].record is None
    assert outcomes[1].error is None and outcomes[1].path.exists()
