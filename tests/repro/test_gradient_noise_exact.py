"""gradient-noise: each seed of the ensemble equals its single-model run bit for bit (this CPU).

``tests/repro/test_seed_batch.py`` compares the two up to float rounding (portable); this test
pins the exactness the reproduction's records rely on (hand-written backward, in-place ReLU,
weight gradient formed as ``g^T a``)."""

from __future__ import annotations

import pytest
import torch

from optforge.repro.papers import gradient_noise as gn


@pytest.mark.parametrize("arm", ["sgd+noise", "adam"])
def test_ensemble_equals_single_models_exactly(arm):
    torch.set_num_threads(1)
    config = {
        **gn.CONFIGS["quick"],
        "depth": 4,
        "steps": 30,
        "adam_steps": 30,
        "eval_every": 10,
        "mid_step": 20,
    }
    seeds = (100, 101)
    try:
        ensemble = gn.train_ensemble(config, seeds, "cpu", **gn._ARMS[arm])
        single = {seed: gn.METHODS[arm](config, seed, "cpu") for seed in seeds}
    finally:
        torch.set_flush_denormal(False)
    for seed in seeds:
        assert ensemble[seed] == single[seed]
