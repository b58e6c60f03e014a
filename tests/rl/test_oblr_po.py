"""Tests for optforge.rl.oblr_po, the module that keeps the old import path working."""

from __future__ import annotations

import pytest

import optforge.rl
from optforge.rl import oblr_po

OLD_NAMES = [
    "BASELINES", "LOSS_TYPES", "NORM_METHODS", "SCALE_REWARDS", "TRL_STD_EPS", "Baseline",
    "LossType", "NormMethod", "OBLRPOTrainer", "SNRLearningRate", "ScaleRewards", "advantages",
    "loss_coefficients", "make_oblr_grpo_trainer_class", "optimal_baseline",
    "policy_gradient_loss", "score_sqnorms", "token_logprobs",
]  # fmt: skip


def test_old_import_path_reexports_the_same_objects():
    for name in OLD_NAMES:
        assert name in oblr_po.__all__
        obj = getattr(oblr_po, name)
        if name in optforge.rl.__all__:
            assert obj is getattr(optforge.rl, name)
    assert set(oblr_po.__all__) <= set(dir(oblr_po))
    from optforge.rl.oblr_po import OBLRPOTrainer, score_sqnorms  # noqa: F401


def test_reward_fn_alias_is_deprecated():
    with pytest.warns(DeprecationWarning, match="ResponseRewardFn"):
        alias = oblr_po.RewardFn
    assert alias is optforge.rl.ResponseRewardFn
    with pytest.raises(AttributeError):
        _ = oblr_po.no_such_name
