"""adadagrad: the constant-batch seed ensemble equals per-seed training bit for bit."""

from __future__ import annotations

import pytest

from optforge.repro.papers import adadagrad
from optforge.repro.registry import get


@pytest.mark.parametrize("arm", ["adagrad(b=2)", "mlp/adagrad(b=16)"])
def test_constant_batch_ensemble_equals_per_seed_training(arm):
    config = {**adadagrad.CONFIGS["quick"], "epochs": 2}
    seeds = (100, 101, 102)
    ensemble = adadagrad._ENSEMBLES[arm](config, seeds, "cpu")
    for seed in seeds:
        assert ensemble[seed] == adadagrad.METHODS[arm](config, seed, "cpu")


def test_batched_run_covers_every_arm_and_runs_adaptive_arms_per_seed():
    repro = get("adadagrad")
    assert repro.batched is adadagrad._train_seeds
    assert repro.seed_batch is None
    # every constant-batch arm has an ensemble, every other arm goes through _train
    assert set(adadagrad._ENSEMBLES) == {
        arm for arm in adadagrad.METHODS if arm.split("/")[-1].startswith("adagrad(")
    }
    config = {**adadagrad.CONFIGS["smoke"], "epochs": 1}
    arms = ("adadagrad-norm", "adagrad(b=1437)")
    out = repro.run_seeds(arms, config, (100, 101), "cpu")
    for seed in (100, 101):
        for arm in arms:
            assert out[seed][arm] == adadagrad.METHODS[arm](config, seed, "cpu")
