"""Shared reproduction plumbing: one experiment many arms, data sets, model builder, the cache."""

import numpy as np
import pytest
import torch
from torch import nn

from optforge.repro import (
    Claim,
    Reproduction,
    Results,
    register,
    run_reproduction,
)
from optforge.repro import registry as registry_module
from optforge.repro.cache import memoize
from optforge.repro.data import digits, digits_split
from optforge.repro.models import mlp
from optforge.repro.runner import plan_trials

CALLS: list[tuple[int, tuple[str, ...]]] = []


def _experiment(config, seed, device, arms):
    CALLS.append((seed, tuple(arms)))
    shared = np.random.default_rng(seed).standard_normal()  # the work every arm shares
    return {arm: {"score": shared + (1.0 if arm == "ours" else 0.0)} for arm in arms}


def _shared_repro(name="toy-shared"):
    return Reproduction(
        name=name,
        title="Shared",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods=["ours", "baseline"],
        experiment=_experiment,
        methods_by_scale={"smoke": ["ours"]},
        claims=[
            Claim(
                name="gap",
                statement="Ours scores higher.",
                metric=lambda r: r.worst_gap("ours", "baseline", "score"),
                op=">=",
                threshold=0.99,
                scales=("quick",),
            )
        ],
        seeds={"smoke": 2, "quick": 3, "full": 1},
    )


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", {})
    monkeypatch.setattr(registry_module, "_DISCOVERED", True)
    CALLS.clear()
    return register(_shared_repro())


def test_experiment_runs_once_per_seed_and_hands_each_arm_its_share(shared):
    record = run_reproduction(shared, "quick")
    assert CALLS == [
        (100, ("ours", "baseline")),
        (101, ("ours", "baseline")),
        (102, ("ours", "baseline")),
    ]
    assert record["claims"][0]["held"]
    for seed in ("100", "101", "102"):
        gap = (
            record["metrics"]["ours"][seed]["score"] - record["metrics"]["baseline"][seed]["score"]
        )
        assert gap == pytest.approx(1.0)
    assert [t["arms"] for t in record["trials"]] == [["ours", "baseline"]] * 3


def test_experiment_gets_only_the_arms_of_the_scale(shared):
    record = run_reproduction(shared, "smoke")
    assert CALLS == [(100, ("ours",)), (101, ("ours",))]
    assert list(record["metrics"]) == ["ours"]


def test_plan_trials_unit_is_the_experiment(shared):
    trials = plan_trials(shared, "quick", [1, 2])
    assert [(t.arms, t.seed) for t in trials] == [
        (("ours", "baseline"), 1),
        (("ours", "baseline"), 2),
    ]
    assert trials[0].method == "ours+baseline"


def test_missing_arm_in_experiment_output_is_an_error(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", {})
    monkeypatch.setattr(registry_module, "_DISCOVERED", True)
    repro = register(
        Reproduction(
            name="broken",
            title="t",
            arxiv="0",
            spec="none.md",
            configs={"smoke": {}, "quick": {}, "full": {}},
            methods=["a", "b"],
            experiment=lambda config, seed, device, arms: {"a": {"x": 1.0}},
            claims=[],
        )
    )
    with pytest.raises(RuntimeError, match="returned no"):
        run_reproduction(repro, "smoke")


def test_methods_must_match_the_experiment_form():
    with pytest.raises(ValueError, match="list of arm names"):
        Reproduction(
            name="x",
            title="t",
            arxiv="0",
            spec="s",
            configs={"smoke": {}, "quick": {}, "full": {}},
            methods=["a"],
            claims=[],
        )


def test_results_aggregation_helpers():
    r = Results({"a": {1: {"m": 2.0}, 2: {"m": 6.0}}, "b": {1: {"m": 1.0}, 2: {"m": 4.0}}})
    assert r.worst_ratio("a", "b", "m") == 2.0
    assert r.median_ratio("a", "b", "m") == pytest.approx(1.75)
    assert r.worst_gap("a", "b", "m") == 1.0
    assert r.mean_gap("a", "b", "m") == 1.5
    assert r.fraction_paired("a", "b", "m", lambda d: d > 1.5) == 0.5


def test_digits_preprocessing_is_explicit():
    x, _y = digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    xs, _ = digits(pixels="symmetric", shuffle_seed=0)
    assert xs.min() == -1 and xs.max() == 1
    xc, _ = digits(center=True)
    assert xc.mean(0).abs().max() < 1e-5
    raw, _ = digits(pixels="raw")
    assert raw.dtype == torch.float64 and raw.max() == 16
    x_tr, _, x_te, _ = digits_split(n_train=1000)
    assert len(x_tr) == 1000 and len(x_te) == 797
    x_tr, _y_tr, x_te, y_te = digits_split(test_size=0.3, standardize=True)
    assert len(x_te) == 540 and x_tr.mean(0).abs().max() < 1e-4
    assert torch.bincount(y_te).min() >= 50  # stratified
    with pytest.raises(ValueError, match="exactly one"):
        digits_split()
    with pytest.raises(ValueError, match="pixels"):
        digits(pixels="bogus")


def test_mlp_builder_layout():
    torch.manual_seed(0)
    net = mlp([4, 8, 8, 2], activation=nn.SiLU, dropout=0.1, out_activation=nn.Tanh())
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "SiLU", "Dropout", "Linear", "SiLU", "Dropout", "Linear", "Tanh"]
    with pytest.raises(ValueError, match="sizes"):
        mlp([3])


def test_memoize_keys_on_canonical_arguments():
    calls = []

    @memoize(maxsize=2)
    def f(config, seed):
        calls.append(seed)
        return seed * 2

    assert f({"a": 1, "b": [1, 2]}, 1) == 2
    assert f({"b": [1, 2], "a": 1}, 1) == 2  # same config, other key order
    assert calls == [1]
    f({"a": 1}, 2), f({"a": 1}, 3), f({"a": 1, "b": [1, 2]}, 1)
    assert calls == [1, 2, 3, 1]  # LRU evicted the first entry
    with pytest.raises(TypeError, match="cache key"):
        f(object(), 1)
