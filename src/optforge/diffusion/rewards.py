"""The reward callables of the diffusion methods, one name per signature.

Rewards score a batch of images, one score per image, higher is better:

* :data:`ImageRewardFn` — ``reward(images) -> [B]``: ReNO's differentiable rewards (the prompt
  is baked into the callable).
* :data:`PromptRewardFn` — ``reward(images, cond) -> [M]`` or ``[M, R]`` (``R`` rewards, ranked
  by Borda count): TTSnap's final reward, handed the conditioning of each candidate.
* :data:`IntermediateRewardFn` — ``reward(images, cond, step) -> [M]`` or ``[M, R]``: TTSnap's
  noise-aware reward on the clean-image estimate at sampler step ``step``.

Example::

    import torch
    from optforge.diffusion.rewards import ImageRewardFn, PromptRewardFn

    brightness: ImageRewardFn = lambda x: x.flatten(1).mean(1)
    matches: PromptRewardFn = lambda x, cond: -(x - cond).flatten(1).pow(2).sum(1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["ImageRewardFn", "IntermediateRewardFn", "PromptRewardFn"]

ImageRewardFn = Callable[[Tensor], Tensor]
"""``reward(images) -> scores [B]`` (ReNO)."""

PromptRewardFn = Callable[[Tensor, Any], Tensor]
"""``reward(images, cond) -> scores [M]`` or ``[M, R]`` (TTSnap's final reward)."""

IntermediateRewardFn = Callable[[Tensor, Any, int], Tensor]
"""``reward(images, cond, step) -> scores [M]`` or ``[M, R]`` (TTSnap's noise-aware reward)."""
