"""Optimizers in the ``torch.optim`` idiom (and wrappers around any ``torch.optim`` optimizer)."""

from optforge.optim.adadagrad import (
    AdAdaGrad,
    AdAdaGradNorm,
    AdaGradNorm,
    AdaptiveBatch,
    AdaptiveBatchSize,
    GradStats,
    batch_grad_stats,
    per_sample_grads,
)
from optforge.optim.gradient_noise import (
    GradientNoise,
    NoisyOptimizer,
    add_gradient_noise_,
    annealed_noise_std,
)
from optforge.optim.langevin import IterateAverager, Langevin, langevin_noise_std, langevin_recover
from optforge.optim.optimistic_sgd import OptimisticSGD
from optforge.optim.regularized_newton import (
    GNSResult,
    GradNormSmoothNewton,
    gns_minimize,
    regularized_newton_step,
)
from optforge.optim.sso import SSO, TargetSurrogateLoss, target_gradient
from optforge.optim.sven import SvdInfo, Sven, sven_direction

__all__ = [
    "SSO",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaGradNorm",
    "AdaptiveBatch",
    "AdaptiveBatchSize",
    "GNSResult",
    "GradNormSmoothNewton",
    "GradStats",
    "GradientNoise",
    "IterateAverager",
    "Langevin",
    "NoisyOptimizer",
    "OptimisticSGD",
    "SvdInfo",
    "Sven",
    "TargetSurrogateLoss",
    "add_gradient_noise_",
    "annealed_noise_std",
    "batch_grad_stats",
    "gns_minimize",
    "langevin_noise_std",
    "langevin_recover",
    "per_sample_grads",
    "regularized_newton_step",
    "sven_direction",
    "target_gradient",
]
