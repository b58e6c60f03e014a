"""Loss modules (robust and unnormalized-model objectives)."""

from optforge.losses.elr import (
    ELRLoss,
    ELRPlusLoss,
    GCELoss,
    ModelEMA,
    SCELoss,
    elr_regularizer,
    mixup_batch,
    sigmoid_rampup,
    update_ema_targets_,
)

__all__ = [
    "ELRLoss",
    "ELRPlusLoss",
    "GCELoss",
    "ModelEMA",
    "SCELoss",
    "elr_regularizer",
    "mixup_batch",
    "sigmoid_rampup",
    "update_ema_targets_",
]
