"""Test-time optimization for generative models."""

from optforge.diffusion.reno import (
    OneStepDiffusersGenerator,
    ReNO,
    ReNOResult,
    best_of_n,
    chi_norm_nll,
    reno,
)

__all__ = [
    "OneStepDiffusersGenerator",
    "ReNO",
    "ReNOResult",
    "best_of_n",
    "chi_norm_nll",
    "reno",
]
