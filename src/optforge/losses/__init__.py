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
from optforge.losses.meco import (
    ENCELoss,
    MECOLoss,
    NCELoss,
    fit_gaussian_noise,
    grid_log_partition,
    meco_momentum_sgd,
)

__all__ = [
    "ELRLoss",
    "ELRPlusLoss",
    "ENCELoss",
    "GCELoss",
    "MECOLoss",
    "ModelEMA",
    "NCELoss",
    "SCELoss",
    "elr_regularizer",
    "fit_gaussian_noise",
    "grid_log_partition",
    "meco_momentum_sgd",
    "mixup_batch",
    "sigmoid_rampup",
    "update_ema_targets_",
]
