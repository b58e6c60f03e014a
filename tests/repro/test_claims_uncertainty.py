"""Claims carry a bootstrap interval over seeds and a held / failed / inconclusive verdict."""

import math

import numpy as np
import pytest

from optforge.repro import Claim, Reproduction, Results, run_reproduction
from optforge.repro import registry as registry_module
from optforge.repro.registry import bootstrap_interval, verdict


def _results(**per_method):
    """``a=[...], b=[...]`` → Results with metric ``x`` on seeds 100, 101, ..."""
    return Results(
        {
            m: {100 + i: {"x": float(v)} for i, v in enumerate(vals)}
            for m, vals in per_method.items()
        }
    )


def test_resample_draws_seeds_jointly_and_relabels_repeats():
    r = _results(a=[1, 2, 3], b=[10, 20, 30])
    assert r.seeds() == [100, 101, 102]
    again = r.resample((2, 2, 0))
    assert list(again.values("a", "x")) == [3.0, 3.0, 1.0]
    assert list(again.values("b", "x")) == [30.0, 30.0, 10.0]


def test_exact_bootstrap_of_a_mean_over_three_seeds():
    # 27 equally likely ordered draws; "all three the lowest seed" has probability 1/27 > 2.5%,
    # so the 95% interval of the mean runs from the lowest to the highest seed.
    r = _results(a=[0.0, 1.0, 2.0])
    low, high = bootstrap_interval(r, lambda r: r.mean("a", "x"))
    assert (low, high) == (0.0, 2.0)


def test_bootstrap_of_a_mean_narrows_with_more_seeds():
    rng = np.random.default_rng(0)
    few = _results(a=rng.normal(1.0, 1.0, 5))
    many = _results(a=rng.normal(1.0, 1.0, 40))  # Monte Carlo draws (more than 7 seeds)
    width = [np.diff(bootstrap_interval(r, lambda r: r.mean("a", "x")))[0] for r in (few, many)]
    assert width[1] < width[0]
    # Percentile bootstrap of a mean of 40 normals: about 2 * 1.96 / sqrt(40) wide.
    assert 0.4 < width[1] < 0.9


def test_pairs_stay_paired():
    # b varies a lot between seeds but a = 2 b on every seed: the per-seed ratio is exactly 2
    # in every resample. Resampling the methods independently would spread it.
    b = [1.0, 5.0, 0.2, 9.0, 3.0, 7.0]
    r = _results(a=[2 * v for v in b], b=b)
    assert bootstrap_interval(r, lambda r: r.worst_ratio("a", "b", "x"), "<=") == (2.0, 2.0)
    low, high = bootstrap_interval(r, lambda r: r.mean("a", "x") / r.mean("b", "x"), "<=")
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)


def test_interval_is_deterministic():
    r = _results(a=np.linspace(0, 1, 12), b=np.linspace(1, 0, 12))
    first = bootstrap_interval(r, lambda r: r.mean_gap("a", "b", "x"))
    assert first == bootstrap_interval(r, lambda r: r.mean_gap("a", "b", "x"))
    assert first[0] < 0 < first[1]


@pytest.mark.parametrize(
    ("op", "threshold", "interval", "expected"),
    [
        (">=", 1.0, (1.0, 2.0), "held"),
        (">=", 1.0, (0.5, 2.0), "inconclusive"),
        (">=", 1.0, (0.1, 0.9), "failed"),
        (">", 1.0, (1.0, 2.0), "inconclusive"),
        (">", 1.0, (0.5, 1.0), "failed"),
        ("<=", 1.0, (0.1, 1.0), "held"),
        ("<=", 1.0, (0.5, 1.5), "inconclusive"),
        ("<=", 1.0, (1.1, 1.5), "failed"),
        ("<", 1.0, (0.1, 1.0), "inconclusive"),
        ("<", 1.0, (1.0, 1.5), "failed"),
    ],
)
def test_verdict_from_the_interval(op, threshold, interval, expected):
    value = sum(interval) / 2
    assert verdict(op, threshold, value, interval) == expected


def test_verdict_of_a_non_finite_value_is_failed():
    assert verdict(">=", 0.0, math.nan, (1.0, 2.0)) == "failed"


def test_worst_seed_claim_keeps_every_seed_cleared_as_held():
    worst = lambda r: r.max("a", "x")  # noqa: E731  (worst seed of a "lower is better" metric)
    all_below = _results(a=[0.1, 0.2, 0.3, 0.4, 0.5])
    low, high = bootstrap_interval(all_below, worst, "<=")
    assert high == 0.5  # the held-side end is the observed worst seed
    assert verdict("<=", 0.6, 0.5, (low, high)) == "held"
    one_above = _results(a=[0.1, 0.2, 0.3, 0.4, 0.9])  # one seed of five misses the bar
    assert verdict("<=", 0.6, 0.9, bootstrap_interval(one_above, worst, "<=")) == "inconclusive"
    most_above = _results(a=[0.7, 0.8, 0.9, 0.75, 0.1])  # four of five miss it
    assert verdict("<=", 0.6, 0.9, bootstrap_interval(most_above, worst, "<=")) == "failed"


def test_a_resample_without_a_finite_value_counts_against_the_claim():
    # The metric is undefined (division by zero) on resamples made only of seed 100.
    r = _results(a=[0.0, 1.0, 1.0], b=[1.0, 1.0, 1.0])
    low, high = bootstrap_interval(r, lambda r: r.mean("b", "x") / r.mean("a", "x"), ">=")
    assert low == -math.inf and math.isfinite(high)
    low, high = bootstrap_interval(r, lambda r: r.mean("b", "x") / r.mean("a", "x"), "<=")
    assert high == math.inf


def test_one_seed_gives_the_point():
    r = _results(a=[0.7])
    assert bootstrap_interval(r, lambda r: r.mean("a", "x")) == (0.7, 0.7)


def test_claim_record_has_value_interval_verdict_and_held():
    r = _results(a=[0.9, 1.0, 1.1, 1.2, 0.8])
    claim = Claim("c", "s", lambda r: r.mean("a", "x"), ">=", 0.95, description="mean of x")
    record = claim.evaluate(r, "quick")
    assert record["quantity"] == "mean of x"  # defaults to the description
    assert record["value"] == pytest.approx(1.0)
    low, high = record["interval"]
    assert low < 0.95 < 1.0 < high and record["interval_level"] == 0.95
    assert record["verdict"] == "inconclusive" and record["held"] is False
    assert record["n_seeds"] == 5
    sure = Claim("c", "s", lambda r: r.mean("a", "x"), ">=", 0.5, quantity="mean x (units)")
    record = sure.evaluate(r, "quick")
    assert record["quantity"] == "mean x (units)"
    assert record["verdict"] == "held" and record["held"] is True
    assert record["interval"][0] <= record["value"] <= record["interval"][1]


def test_claim_rejects_an_unknown_op():
    with pytest.raises(ValueError, match="op"):
        Claim("c", "s", lambda r: 0.0, "=>", 1.0)


def _noisy(threshold):
    def run(config, seed, device):
        return {"x": 1.0 + 0.3 * np.random.default_rng(seed).standard_normal()}

    return Reproduction(
        name="toy-noisy",
        title="t",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods={"a": run},
        claims=[Claim("mean-x", "x is large", lambda r: r.mean("a", "x"), ">=", threshold)],
        seeds={"smoke": 3, "quick": 3, "full": 3},
    )


def test_a_run_with_an_inconclusive_claim_is_not_all_held(monkeypatch):
    monkeypatch.setitem(registry_module._REGISTRY, "toy-noisy", _noisy(1.0))
    record = run_reproduction(_noisy(1.0), "quick")
    [claim] = record["claims"]
    assert claim["verdict"] == "inconclusive"
    assert record["all_held"] is False
