"""Sequential mode: more held-out seeds until every claim is decided, or N_max."""

import json

import numpy as np
import pytest

from optforge import cli
from optforge.repro import Claim, Reproduction
from optforge.repro import registry as registry_module
from optforge.repro.sequential import planned_looks, run_until_decided

CALLS: list[int] = []


def _run(config, seed, device):
    CALLS.append(seed)
    # Seeds 100..: x = 0.65, 0.76, 1.19, 1.33, 1.17, 0.98, ... (true mean 1, sd 0.3).
    return {"x": 1.0 + 0.3 * np.random.default_rng(seed).standard_normal()}


def _toy(threshold, name="toy-seq"):
    return Reproduction(
        name=name,
        title="t",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods={"a": _run},
        claims=[Claim("mean-x", "x is large", lambda r: r.mean("a", "x"), ">=", threshold)],
        seeds={"smoke": 3, "quick": 3, "full": 3},
    )


@pytest.fixture
def toys(monkeypatch):
    CALLS.clear()
    decided, never = _toy(0.8), _toy(1.0, "toy-seq-never")
    monkeypatch.setitem(registry_module._REGISTRY, decided.name, decided)
    monkeypatch.setitem(registry_module._REGISTRY, never.name, never)
    return decided, never


def test_planned_looks_double_up_to_n_max():
    assert planned_looks(3, 24) == [3, 6, 12, 24]
    assert planned_looks(5, 12) == [5, 10, 12]
    assert planned_looks(4, 4) == [4]
    with pytest.raises(ValueError, match="until-decided"):
        planned_looks(5, 3)


def test_adds_seeds_until_the_claim_is_decided(toys):
    decided, _ = toys
    record = run_until_decided(decided, "quick", n_max=24)
    looks = record["sequential"]["looks"]
    # 3 and 6 seeds: the interval straddles 0.8; 12 seeds: it clears it.
    assert [look["n_seeds"] for look in looks] == [3, 6, 12]
    assert [look["inconclusive"] for look in looks] == [["mean-x"], ["mean-x"], []]
    assert looks[-1]["seeds"] == list(range(100, 112)) == record["seeds"]
    assert record["claims"][0]["verdict"] == "held" and record["all_held"]
    # Four planned looks share the 5% error budget: every interval is at 98.75%.
    assert record["sequential"]["planned_looks"] == [3, 6, 12, 24]
    assert record["claims"][0]["interval_level"] == pytest.approx(0.9875)
    assert sorted(CALLS) == list(range(100, 112))  # no seed ran twice
    json.dumps(record, allow_nan=False)


def test_stops_at_n_max_when_still_inconclusive(toys):
    _, never = toys
    record = run_until_decided(never, "quick", n_max=10)
    assert [look["n_seeds"] for look in record["sequential"]["looks"]] == [3, 6, 10]
    assert record["claims"][0]["verdict"] == "inconclusive" and not record["all_held"]
    assert len(record["seeds"]) == 10


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_until_decided(toys, tmp_path, capsys):
    code, out, _ = _cli(
        ["reproduce", "toy-seq", "--until-decided", "24", "--out", str(tmp_path), "--json"],
        capsys,
    )
    assert code == 0
    record = json.loads(out)
    assert [look["n_seeds"] for look in record["sequential"]["looks"]] == [3, 6, 12]
    code, _, err = _cli(["reproduce", "toy-seq", "--until-decided", "2"], capsys)
    assert code == 2 and "--until-decided" in err
