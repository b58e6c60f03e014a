"""Test-time optimization for generative models.

* :mod:`optforge.diffusion.reno` — ReNO, gradient ascent on the initial noise of a one-step
  generator, and its random-search baseline :func:`best_of_n`;
* :mod:`optforge.diffusion.ttsnap` — TTSnap, best-of-N over a multi-step sampler with the pool
  pruned by noise-aware rewards (:func:`ttsnap_search`, :func:`sampler_best_of_n`);
* :mod:`optforge.diffusion.rewards` — the reward callables' types.
"""

from optforge.diffusion.reno import (
    OneStepDiffusersGenerator,
    ReNO,
    ReNOResult,
    best_of_n,
    chi_norm_nll,
    reno,
)
from optforge.diffusion.rewards import ImageRewardFn, IntermediateRewardFn, PromptRewardFn
from optforge.diffusion.ttsnap import (
    CostModel,
    DDIMSampler,
    DiffusersSampler,
    NoiseAwareDistiller,
    NoiseAwareReward,
    PruningSchedule,
    SearchResult,
    SteppableSampler,
    TrajectoryDataset,
    alignment_metrics,
    borda_scores,
    relative_area_gain,
    reward_budget_curve,
    sampler_best_of_n,
    simulate_best_of_n,
    simulate_ttsnap,
    ttsnap_search,
)

__all__ = [
    "CostModel",
    "DDIMSampler",
    "DiffusersSampler",
    "ImageRewardFn",
    "IntermediateRewardFn",
    "NoiseAwareDistiller",
    "NoiseAwareReward",
    "OneStepDiffusersGenerator",
    "PromptRewardFn",
    "PruningSchedule",
    "ReNO",
    "ReNOResult",
    "SearchResult",
    "SteppableSampler",
    "TrajectoryDataset",
    "alignment_metrics",
    "best_of_n",
    "borda_scores",
    "chi_norm_nll",
    "relative_area_gain",
    "reno",
    "reward_budget_curve",
    "sampler_best_of_n",
    "simulate_best_of_n",
    "simulate_ttsnap",
    "ttsnap_search",
]
