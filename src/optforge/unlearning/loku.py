"""LoKU: the inverted hinge loss and Fisher-weighted LoRA initialisation (FILA) for unlearning.

Paper: *Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs* (earlier title:
*Towards Robust and Cost-Efficient Knowledge Unlearning for Large Language Models*), Sungmin Cha,
Sungjun Cho, Dasol Hwang, Moontae Lee, ICLR 2025, arXiv:2408.06621. Official code:
``csm9493/efficient-llm-unlearning`` (TOFU part).

The method's pieces, one file each (this module re-exports them):

* :mod:`optforge.unlearning.losses` — the inverted hinge loss (IHL) and gradient ascent;
* :mod:`optforge.unlearning.fisher` — empirical Fisher diagonals and the relative importance;
* :mod:`optforge.unlearning.fila` — the Fisher-weighted LoRA initialisation (FILA);
* :mod:`optforge.unlearning.trainer` — :class:`Unlearner`, the forget + retain loop;
* :mod:`optforge.unlearning.batches` — logits and labels of Hugging Face-style batches.

Example::

    from peft import LoraConfig, get_peft_model
    from optforge.unlearning import FilaConfig, Unlearner, initialize_fila

    model = get_peft_model(base_lm, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    initialize_fila(model, forget_loader, retain_loader, FilaConfig())
    unlearner = Unlearner(model, forget_loss="ihl", retain_loss="nll", lr=1e-3)
    history = unlearner.fit(forget_loader, retain_loader, epochs=5)
"""

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
from optforge.unlearning.trainer import Unlearner

__all__ = [
    "FilaConfig",
    "GradientAscentLoss",
    "InvertedHingeLoss",
    "Unlearner",
    "causal_lm_logits",
    "fila_factors",
    "fila_init_",
    "fisher_diagonal",
    "gradient_ascent_loss",
    "initialize_fila",
    "inverted_hinge_loss",
    "lora_layers",
    "relative_importance",
]
