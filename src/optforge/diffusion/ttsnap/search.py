r"""TTSnap's online search: best-of-N with the pool pruned at checkpoints.

Best-of-N draws :math:`N` seeds, denoises each fully and keeps the one with the highest reward
(:func:`sampler_best_of_n`). TTSnap (:func:`ttsnap_search`) runs all candidates in lock-step
and, at checkpoints :math:`s_1 < \dots < s_K`, scores the clean-image estimate
:math:`\hat x_0^{(s)}` with a noise-aware reward :math:`R_s` and keeps the best :math:`m_k`
candidates (see :class:`~optforge.diffusion.ttsnap.PruningSchedule`). Survivors are denoised
to the end and the pick is the argmax of the original reward :math:`R` on the clean images.
With several rewards (``[M, R]`` scores) candidates are ranked per reward inside the current
pool and the rank sums (Borda count) decide, at checkpoints and for the final pick.

Paper: Q. Yu, C. Song, M. Sun, Z. Yu, V. K. Verma, S. Roy, S. Negi, H. Li, D. Campbell,
"TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242.

Choices: survivors are kept in descending-score order by a stable sort (ties keep pool order),
the same helper as the offline simulation, so both pick the same seed; a budget buys the
largest :math:`N` whose exact cost fits (``cost_spent <= budget``).

Example::

    import torch
    from optforge.diffusion.ttsnap import (CostModel, DDIMSampler, PruningSchedule,
                                           ttsnap_search)

    betas = torch.linspace(1e-4, 0.02, 1000)
    abar = torch.cumprod(1 - betas, 0)
    denoiser = lambda x, t, cond: 0.1 * x          # any eps-prediction callable
    sampler = DDIMSampler(denoiser, abar, torch.linspace(999, 0, 20).round().long(), (16,))
    reward = lambda x, cond: -(x - 0.5).pow(2).sum(1)   # one score per candidate
    result = ttsnap_search(sampler, reward, lambda x, cond, step: reward(x, cond),
                           PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5)), budget=1000.0,
                           cost=CostModel(step_cost=1.0, reward_cost=0.1),
                           generator=torch.Generator().manual_seed(0))
    result.cost_spent <= 1000.0                     # True; result.n_candidates == 161
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optforge._core import check_finite, check_positive_int
from optforge.diffusion.rewards import IntermediateRewardFn, PromptRewardFn
from optforge.diffusion.ttsnap.ranking import _rank_order
from optforge.diffusion.ttsnap.samplers import SteppableSampler, _cond_of
from optforge.diffusion.ttsnap.schedule import CostModel, PruningSchedule

__all__ = ["SearchResult", "sampler_best_of_n", "ttsnap_search"]


@dataclass
class SearchResult:
    """Outcome of :func:`ttsnap_search` / :func:`sampler_best_of_n`.

    Attributes:
        image: The chosen final image (decoded).
        seed_index: Row of the chosen seed in the initial pool.
        reward: Final reward of the chosen image (``[]`` or ``[R]``).
        n_candidates: Number of seeds drawn.
        cost_spent: Exact compute spent (:class:`CostModel` units).
        pool_sizes: Pool size entering each checkpoint, then the number of final survivors.
        scores: Step index → intermediate scores of the pool at that checkpoint; key
            ``num_steps - 1`` holds the final rewards of the survivors.
        survivors: Step index → seed indices of the pool scored at that step.
    """

    image: Tensor
    seed_index: int
    reward: Tensor
    n_candidates: int
    cost_spent: float
    pool_sizes: list[int]
    scores: dict[int, Tensor]
    survivors: dict[int, Tensor]


def ttsnap_search(
    sampler: SteppableSampler,
    final_reward: PromptRewardFn,
    intermediate_reward: IntermediateRewardFn | Mapping[int, PromptRewardFn] | None,
    schedule: PruningSchedule | None,
    *,
    n: int | None = None,
    budget: float | None = None,
    cost: CostModel | None = None,
    cond: Any = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> SearchResult:
    """Run ``n`` (or as many as ``budget`` buys) seeds in lock-step, prune, return the best.

    Args:
        sampler: A :class:`SteppableSampler` (e.g. :class:`DDIMSampler`, :class:`DiffusersSampler`).
        final_reward: ``final_reward(images, cond) -> [M]`` or ``[M, R]`` (Borda over ``R``).
        intermediate_reward: ``fn(images, cond, step) -> scores`` or a mapping step → reward;
            ignored when the schedule is empty.
        schedule: Checkpoints and keep ratios (``None`` or empty: best-of-N).
        n: Number of seeds (give exactly one of ``n``, ``budget``, or pass ``noise``).
        budget: Compute budget in ``cost`` units.
        cost: The :class:`CostModel` (default: one unit per step, free rewards).
        cond: Conditioning handed to the sampler and the rewards.
        generator: Generator for the initial noise.
        noise: Explicit initial noise ``[N, *sample_shape]`` (its rows are the seeds).

    Returns:
        A :class:`SearchResult`.
    """
    schedule = schedule or PruningSchedule()
    cost = cost or CostModel()
    num_steps = sampler.num_steps
    schedule.validate(num_steps)
    if noise is not None and n is None and budget is None:
        n = noise.shape[0]
    if (n is None) == (budget is None):
        raise ValueError("give exactly one of n and budget")
    if budget is not None:
        n = cost.num_candidates(budget, schedule, num_steps)
        if n < 1:
            raise ValueError(
                f"budget={budget} is smaller than the cost of one candidate "
                f"({cost.search_cost(1, schedule, num_steps)})"
            )
    n = check_positive_int("n", n)
    if schedule.steps and intermediate_reward is None:
        raise ValueError("intermediate_reward is required when the schedule prunes")
    checkpoints = dict(zip(schedule.steps, schedule.survivors(n), strict=True))
    state = sampler.init(n, cond, generator, noise)
    pool, spent = n, 0.0
    pool_sizes: list[int] = []
    scores: dict[int, Tensor] = {}
    survivors: dict[int, Tensor] = {}
    x0 = None
    with torch.no_grad():
        for s in range(num_steps):
            state, x0 = sampler.step(state, s)
            spent += pool * cost.step_cost
            if s in checkpoints:
                images = sampler.decode(x0)
                if isinstance(intermediate_reward, Mapping):
                    if s not in intermediate_reward:
                        raise ValueError(f"intermediate_reward has no entry for step {s}")
                    sc = _call_reward(intermediate_reward[s], images, _cond_of(state, cond))
                else:
                    sc = _call_reward(intermediate_reward, images, _cond_of(state, cond), s)
                spent += pool * cost.reward_cost
                pool_sizes.append(pool)
                scores[s], survivors[s] = sc, state.index.clone()
                keep = _rank_order(sc, sc.dim() == 2)[: checkpoints[s]]
                state = sampler.select(state, keep)
                pool = checkpoints[s]
        images = sampler.decode(x0)
        final = _call_reward(final_reward, images, _cond_of(state, cond))
    spent += pool * cost.reward_cost
    pool_sizes.append(pool)
    scores[num_steps - 1], survivors[num_steps - 1] = final, state.index.clone()
    best = int(_rank_order(final, final.dim() == 2)[0])
    return SearchResult(
        image=images[best],
        seed_index=int(state.index[best]),
        reward=final[best],
        n_candidates=n,
        cost_spent=float(spent),
        pool_sizes=pool_sizes,
        scores=scores,
        survivors=survivors,
    )


def sampler_best_of_n(
    sampler: SteppableSampler,
    reward: PromptRewardFn,
    n: int | None = None,
    cond: Any = None,
    *,
    budget: float | None = None,
    cost: CostModel | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> SearchResult:
    """Best-of-N: denoise every seed fully, return the best by ``reward`` (no pruning).

    The baseline of :func:`ttsnap_search` (``ttsnap_search`` with an empty schedule); not to be
    confused with :func:`optforge.diffusion.best_of_n`, ReNO's random search over noises.
    """
    return ttsnap_search(
        sampler,
        reward,
        None,
        None,
        n=n,
        budget=budget,
        cost=cost,
        cond=cond,
        generator=generator,
        noise=noise,
    )


def _call_reward(fn: Callable[..., Tensor], images: Tensor, cond: Any, *extra: Any) -> Tensor:
    out = fn(images, cond, *extra)
    if not isinstance(out, Tensor):
        raise TypeError(f"reward must return a tensor, got {type(out).__name__}")
    m = images.shape[0]
    if out.dim() not in (1, 2) or out.shape[0] != m:
        raise ValueError(f"reward must return shape [{m}] or [{m}, R], got {tuple(out.shape)}")
    return check_finite("reward output", out.detach())
