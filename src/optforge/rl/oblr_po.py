"""OBLR-PO (Huang, Sheng, Zheng, arXiv:2511.23310): the names of its pieces in one place.

The method lives in one file per idea: :mod:`optforge.rl.advantages` (optimal baselines),
:mod:`optforge.rl.score_norms` (per-sample squared score norms), :mod:`optforge.rl.policy_loss`,
:mod:`optforge.rl.snr_lr` (the SNR learning rate), :mod:`optforge.rl.trainer` and
:mod:`optforge.rl.trl_adapter`. This module re-exports them so that
``from optforge.rl.oblr_po import ...`` keeps working; new code imports from :mod:`optforge.rl`.
"""

from __future__ import annotations

import warnings
from typing import Any

from optforge.rl.advantages import (
    BASELINES,
    SCALE_REWARDS,
    TRL_STD_EPS,
    Baseline,
    ScaleRewards,
    advantages,
    optimal_baseline,
)
from optforge.rl.logprobs import token_logprobs
from optforge.rl.policy_loss import LOSS_TYPES, LossType, loss_coefficients, policy_gradient_loss
from optforge.rl.score_norms import NORM_METHODS, NormMethod, score_sqnorms
from optforge.rl.snr_lr import SNRLearningRate
from optforge.rl.trainer import OBLRPOTrainer, ResponseRewardFn
from optforge.rl.trl_adapter import make_oblr_grpo_trainer_class

__all__ = [
    "BASELINES",
    "LOSS_TYPES",
    "NORM_METHODS",
    "SCALE_REWARDS",
    "TRL_STD_EPS",
    "Baseline",
    "LossType",
    "NormMethod",
    "OBLRPOTrainer",
    "ResponseRewardFn",
    "SNRLearningRate",
    "ScaleRewards",
    "advantages",
    "loss_coefficients",
    "make_oblr_grpo_trainer_class",
    "optimal_baseline",
    "policy_gradient_loss",
    "score_sqnorms",
    "token_logprobs",
]


def __getattr__(name: str) -> Any:
    if name == "RewardFn":  # deprecated name: diffusion's reward functions take other arguments
        warnings.warn(
            "optforge.rl.oblr_po.RewardFn is deprecated; use optforge.rl.ResponseRewardFn",
            DeprecationWarning,
            stacklevel=2,
        )
        return ResponseRewardFn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
