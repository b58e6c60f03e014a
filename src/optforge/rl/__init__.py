"""Policy-gradient post-training pieces for language models (OBLR-PO and its baselines).

One file per idea: :mod:`~optforge.rl.advantages` (plain, GRPO, RLOO and optimal baselines),
:mod:`~optforge.rl.score_norms` (per-sample squared score norms),
:mod:`~optforge.rl.logprobs` and :mod:`~optforge.rl.policy_loss` (log-probs and TRL's loss
aggregations), :mod:`~optforge.rl.snr_lr` (the SNR learning rate),
:mod:`~optforge.rl.trainer` (an on-policy trainer), :mod:`~optforge.rl.trl_adapter` (TRL's
``GRPOTrainer``) and :mod:`~optforge.rl.tiny_lm` (a CPU-sized causal LM).
"""

from optforge.rl.advantages import advantages, optimal_baseline
from optforge.rl.logprobs import token_logprobs
from optforge.rl.policy_loss import loss_coefficients, policy_gradient_loss
from optforge.rl.score_norms import score_sqnorms
from optforge.rl.snr_lr import SNRLearningRate
from optforge.rl.tiny_lm import CausalLMOutput, TinyCausalLM
from optforge.rl.trainer import OBLRPOTrainer, ResponseRewardFn
from optforge.rl.trl_adapter import make_oblr_grpo_trainer_class

__all__ = [
    "CausalLMOutput",
    "OBLRPOTrainer",
    "ResponseRewardFn",
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
