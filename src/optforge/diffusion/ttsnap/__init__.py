r"""TTSnap: pruned best-of-N sampling with noise-aware rewards.

Paper: Q. Yu, C. Song, M. Sun, Z. Yu, V. K. Verma, S. Roy, S. Negi, H. Li, D. Campbell,
"TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242.
Reference code: ``TerrysLearning/TTSnap`` (reward distillation and the offline budget
simulation; the online sampler is reconstructed here).

Best-of-N draws :math:`N` seeds, denoises each fully and keeps the best by a reward. TTSnap
runs all candidates in lock-step and, at a few checkpoints, scores the clean-image estimate
:math:`\hat x_0^{(s)}` with a *noise-aware* reward and keeps only the best fraction, so the same
compute buys many more seeds. One file per idea:

* :mod:`~optforge.diffusion.ttsnap.schedule` — :class:`PruningSchedule`, :class:`CostModel`;
* :mod:`~optforge.diffusion.ttsnap.ranking` — :func:`borda_scores` (several rewards);
* :mod:`~optforge.diffusion.ttsnap.samplers` — :class:`SteppableSampler`, :class:`DDIMSampler`,
  :class:`DiffusersSampler`;
* :mod:`~optforge.diffusion.ttsnap.search` — :func:`ttsnap_search`, :func:`sampler_best_of_n`;
* :mod:`~optforge.diffusion.ttsnap.simulate` — offline replay on precomputed scores;
* :mod:`~optforge.diffusion.ttsnap.metrics` — :func:`relative_area_gain`,
  :func:`alignment_metrics`;
* :mod:`~optforge.diffusion.ttsnap.distill` — :class:`TrajectoryDataset`,
  :class:`NoiseAwareDistiller`, :class:`NoiseAwareReward`.

Example::

    import torch
    from optforge.diffusion.ttsnap import (CostModel, DDIMSampler, PruningSchedule,
                                           ttsnap_search)

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    sampler = DDIMSampler(lambda x, t, cond: 0.1 * x, abar,
                          torch.linspace(999, 0, 20).round().long(), (16,))
    reward = lambda x, cond: -(x - 0.5).pow(2).sum(1)
    result = ttsnap_search(sampler, reward, lambda x, cond, step: reward(x, cond),
                           PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5)), budget=1000.0,
                           cost=CostModel(step_cost=1.0, reward_cost=0.1),
                           generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import warnings
from typing import Any

from optforge.diffusion.rewards import IntermediateRewardFn, PromptRewardFn
from optforge.diffusion.ttsnap.distill import (
    NoiseAwareDistiller,
    NoiseAwareReward,
    TrajectoryDataset,
)
from optforge.diffusion.ttsnap.metrics import alignment_metrics, relative_area_gain
from optforge.diffusion.ttsnap.ranking import borda_scores
from optforge.diffusion.ttsnap.samplers import (
    DDIMSampler,
    DiffusersSampler,
    SamplerState,
    SteppableSampler,
)
from optforge.diffusion.ttsnap.schedule import CostModel, PruningSchedule
from optforge.diffusion.ttsnap.search import SearchResult, sampler_best_of_n, ttsnap_search
from optforge.diffusion.ttsnap.simulate import (
    reward_budget_curve,
    simulate_best_of_n,
    simulate_ttsnap,
)

__all__ = [
    "CostModel",
    "DDIMSampler",
    "DiffusersSampler",
    "IntermediateRewardFn",
    "NoiseAwareDistiller",
    "NoiseAwareReward",
    "PromptRewardFn",
    "PruningSchedule",
    "SamplerState",
    "SearchResult",
    "SteppableSampler",
    "TrajectoryDataset",
    "alignment_metrics",
    "best_of_n",  # deprecated alias of sampler_best_of_n
    "borda_scores",
    "relative_area_gain",
    "reward_budget_curve",
    "sampler_best_of_n",
    "simulate_best_of_n",
    "simulate_ttsnap",
    "ttsnap_search",
]

RewardFn = PromptRewardFn
"""Former name of :data:`~optforge.diffusion.rewards.PromptRewardFn` (kept importable)."""


def best_of_n(*args: Any, **kwargs: Any) -> SearchResult:
    """Deprecated alias of :func:`sampler_best_of_n`; it will be removed in the next release.

    ``optforge.diffusion.best_of_n`` is a different function (ReNO's random search).
    """
    warnings.warn(
        "optforge.diffusion.ttsnap.best_of_n is deprecated and will be removed in the next "
        "release; use optforge.diffusion.ttsnap.sampler_best_of_n (same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return sampler_best_of_n(*args, **kwargs)
