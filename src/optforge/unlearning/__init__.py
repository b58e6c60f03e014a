"""Language-model unlearning (LoKU): losses, Fisher-weighted LoRA init, the loop, metrics."""

from optforge.unlearning.batches import causal_lm_logits
from optforge.unlearning.fila import (
    FilaConfig,
    fila_factors,
    fila_init_,
    initialize_fila,
    lora_layers,
)
from optforge.unlearning.fisher import fisher_diagonal, relative_importance
from optforge.unlearning.losses import (
    GradientAscentLoss,
    InvertedHingeLoss,
    gradient_ascent_loss,
    inverted_hinge_loss,
)
from optforge.unlearning.metrics import (
    answer_accuracy,
    answer_logprob,
    answer_probability,
    extraction_likelihood,
    forget_quality,
    greedy_continuation,
    memorization_accuracy,
    model_utility,
    ngram_overlap,
    truth_ratio,
    truth_ratio_score,
)
from optforge.unlearning.trainer import Unlearner

__all__ = [
    "FilaConfig",
    "GradientAscentLoss",
    "InvertedHingeLoss",
    "Unlearner",
    "answer_accuracy",
    "answer_logprob",
    "answer_probability",
    "causal_lm_logits",
    "extraction_likelihood",
    "fila_factors",
    "fila_init_",
    "fisher_diagonal",
    "forget_quality",
    "gradient_ascent_loss",
    "greedy_continuation",
    "initialize_fila",
    "inverted_hinge_loss",
    "lora_layers",
    "memorization_accuracy",
    "model_utility",
    "ngram_overlap",
    "relative_importance",
    "truth_ratio",
    "truth_ratio_score",
]
