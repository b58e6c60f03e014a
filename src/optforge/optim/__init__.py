"""Optimizers in the ``torch.optim`` idiom (and wrappers around any ``torch.optim`` optimizer)."""

from optforge.optim.gradient_noise import (
    GradientNoise,
    NoisyOptimizer,
    add_gradient_noise_,
    annealed_noise_std,
)
from optforge.optim.langevin import IterateAverager, Langevin, langevin_noise_std, langevin_recover

__all__ = [
    "GradientNoise",
    "IterateAverager",
    "Langevin",
    "NoisyOptimizer",
    "add_gradient_noise_",
    "annealed_noise_std",
    "langevin_noise_std",
    "langevin_recover",
]
