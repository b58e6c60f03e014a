"""Policy-gradient post-training pieces for language models."""

from optforge.rl.oblr_po import (
    OBLRPOTrainer,
    SNRLearningRate,
    advantages,
    loss_coefficients,
    make_oblr_grpo_trainer_class,
    optimal_baseline,
    policy_gradient_loss,
    score_sqnorms,
    token_logprobs,
)
from optforge.rl.tiny_lm import CausalLMOutput, TinyCausalLM

__all__ = [
    "CausalLMOutput",
    "OBLRPOTrainer",
    "SNRLearningRate",
    "TinyCausalLM",
    "advantages",
    "loss_coefficients",
    "make_oblr_grpo_trainer_class",
    "optimal_baseline",
    "policy_gradient_loss",
    "score_sqnorms",
    "token_logprobs",
]
