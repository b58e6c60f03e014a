r"""ReNO: reward-based initial-noise optimisation for one-step generators.

Paper: L. Eyring, S. Karthik, K. Roth, A. Dosovitskiy, Z. Akata, "ReNO: Enhancing One-step
Text-to-Image Models through Reward-based Noise Optimization", NeurIPS 2024, arXiv:2406.04312.

ReNO keeps a one-step generator :math:`G` frozen and does gradient ascent on its initial noise,
:math:`\max_z \sum_i \lambda_i R_i(G(z)) - \lambda_{\mathrm{reg}} K(z)`. One file per idea:

* :mod:`~optforge.diffusion.reno.regularizer` — :func:`chi_norm_nll`, the penalty :math:`K`;
* :mod:`~optforge.diffusion.reno.driver` — :class:`ReNO`, :func:`reno`, :class:`ReNOResult`;
* :mod:`~optforge.diffusion.reno.random_search` — :func:`best_of_n`, the random-search baseline;
* :mod:`~optforge.diffusion.reno.diffusers_generator` — :class:`OneStepDiffusersGenerator`.

Example::

    import torch
    from optforge.diffusion.reno import best_of_n, reno

    generator = lambda z: torch.tanh(z)
    target = torch.full((4, 16), 0.5)
    reward = lambda x: -((x - target) ** 2).flatten(1).sum(1)
    z0 = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    result = reno(generator, [reward], [1.0], z0, n_iters=50)
    baseline = best_of_n(generator, [reward], [1.0], z0.shape, n=150, seed=0)
"""

from __future__ import annotations

from optforge.diffusion.reno.diffusers_generator import OneStepDiffusersGenerator
from optforge.diffusion.reno.driver import GeneratorFn, OptimizerSpec, ReNO, ReNOResult, reno
from optforge.diffusion.reno.random_search import best_of_n
from optforge.diffusion.reno.regularizer import chi_norm_nll
from optforge.diffusion.rewards import ImageRewardFn

__all__ = [
    "GeneratorFn",
    "ImageRewardFn",
    "OneStepDiffusersGenerator",
    "OptimizerSpec",
    "ReNO",
    "ReNOResult",
    "best_of_n",
    "chi_norm_nll",
    "reno",
]

RewardFn = ImageRewardFn
"""Former name of :data:`~optforge.diffusion.rewards.ImageRewardFn` (kept importable)."""
