r"""Offline TTSnap: the search replayed on precomputed scores, and reward-vs-budget curves.

Given the scores of every stored trajectory at every step (``intermediate``, ``[P, M, S]``) and
the original reward of its final image (``final``, ``[P, M]``), a search with ``n`` seeds is
replayed on random subsets of the pool: the subset is pruned at the schedule's checkpoints by
the intermediate scores (the same ranking as the online :func:`ttsnap_search`) and the best
survivor's final reward is kept. :func:`reward_budget_curve` averages it over prompts and
Monte-Carlo subsets at each budget :math:`B`, with :math:`N(B)` from the cost model. This is
how the reference code (``TerrysLearning/TTSnap``) evaluates TTSnap against best-of-N
(Q. Yu et al., "TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning", 2025,
arXiv:2511.22242).

Example::

    import torch
    from optforge.diffusion.ttsnap import CostModel, PruningSchedule, reward_budget_curve

    P, M = 10, 500
    final, inter = torch.randn(P, M), torch.randn(P, M, 20)
    order = torch.rand(P, 100, M).argsort(-1)        # common random subsets for every method
    cost, budgets = CostModel(1.0, 0.1), [200.0, 1000.0, 3000.0]
    bon = reward_budget_curve(None, final, None, budgets, cost, 20, order=order)
    tts = reward_budget_curve(inter, final, PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5)),
                              budgets, cost, 20, order=order)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from optforge._core import check_finite, check_positive_int
from optforge.diffusion.ttsnap.ranking import _rank_order, borda_scores
from optforge.diffusion.ttsnap.schedule import CostModel, PruningSchedule

__all__ = ["reward_budget_curve", "simulate_best_of_n", "simulate_ttsnap"]


def simulate_ttsnap(
    intermediate: Tensor | None,
    final: Tensor,
    schedule: PruningSchedule | None,
    n: int,
    *,
    repeats: int = 50,
    generator: torch.Generator | None = None,
    order: Tensor | None = None,
    return_index: bool = False,
) -> Tensor:
    """Offline TTSnap on precomputed scores: random subsets of ``n`` seeds, pruned, best kept.

    Args:
        intermediate: ``[P, M, S]`` (or ``[P, M, S, R]``) scores of the step-``s`` estimates of
            ``M`` pooled trajectories for ``P`` prompts (``None`` for best-of-N).
        final: ``[P, M]`` (or ``[P, M, R]``) original rewards of the final images.
        schedule: Pruning schedule (step indices into the ``S`` axis).
        n: Seeds per draw; capped at ``M`` with a warning.
        repeats: Monte-Carlo draws per prompt.
        generator: Generator for the subsets.
        order: Optional ``[P, repeats, M]`` random order of the pool (its first ``n`` entries
            form the subset); pass the same tensor to every method for common random numbers.
        return_index: Return the picked pool indices ``[P, repeats]`` instead of rewards.

    Returns:
        ``[P, repeats]`` (or ``[P, repeats, R]``) final rewards of the picks.
    """
    schedule = schedule or PruningSchedule()
    multi = _check_inputs(intermediate, final, schedule)
    n = check_positive_int("n", n)
    P, M = final.shape[:2]
    if n > M:
        warnings.warn(f"n={n} exceeds the pool size {M}; capped", stacklevel=2)
        n = M
    if order is None:
        repeats = check_positive_int("repeats", repeats)
        order = torch.rand(P, repeats, M, generator=generator, device=final.device).argsort(-1)
    else:
        _check_order(order, P, M)
    return _simulate(intermediate, final, schedule, n, order, multi, return_index)


def _simulate(
    intermediate: Tensor | None,
    final: Tensor,
    schedule: PruningSchedule,
    n: int,
    order: Tensor,
    multi: bool,
    return_index: bool = False,
) -> Tensor:
    """:func:`simulate_ttsnap` on checked inputs (``n <= M``)."""
    P, M = final.shape[:2]
    pool = order[..., :n]
    reps = pool.shape[1]

    def gather(table: Tensor, idx: Tensor) -> Tensor:  # table [P, M(, R)], idx [P, rep, m]
        if multi:
            t = table[:, None].expand(P, reps, M, table.shape[-1])
            return t.gather(2, idx[..., None].expand(*idx.shape, table.shape[-1]))
        return table[:, None].expand(P, reps, M).gather(2, idx)

    for s, k in zip(schedule.steps, schedule.survivors(n), strict=True):
        sc = gather(intermediate[:, :, s], pool)
        pool = pool.gather(2, _rank_order(sc, multi)[..., :k])
    fin = gather(final, pool)
    best = _best_index(fin, multi)
    picked = pool.gather(2, best)[..., 0]
    if return_index:
        return picked
    if multi:
        return fin.gather(2, best[..., None].expand(P, reps, 1, final.shape[-1]))[:, :, 0]
    return fin.gather(2, best)[..., 0]


def _best_index(scores: Tensor, multi: bool) -> Tensor:
    """``_rank_order(scores, multi)[..., :1]`` without the sort.

    The first index of a stable descending sort is the first position holding the maximum,
    which is what ``argmax`` returns (the scores are finite, so no NaN).
    """
    key = borda_scores(scores) if multi else scores
    return key.argmax(dim=-1, keepdim=True)


def simulate_best_of_n(
    final: Tensor,
    n: int,
    *,
    repeats: int = 50,
    generator: torch.Generator | None = None,
    order: Tensor | None = None,
    return_index: bool = False,
) -> Tensor:
    """Offline best-of-N: ``[P, repeats]`` final rewards of the best of ``n`` random seeds."""
    return simulate_ttsnap(
        None,
        final,
        None,
        n,
        repeats=repeats,
        generator=generator,
        order=order,
        return_index=return_index,
    )


def reward_budget_curve(
    intermediate: Tensor | None,
    final: Tensor,
    schedule: PruningSchedule | None,
    budgets: Sequence[float],
    cost: CostModel,
    num_steps: int,
    *,
    repeats: int = 50,
    generator: torch.Generator | None = None,
    order: Tensor | None = None,
) -> Tensor:
    """Mean final reward of the offline search at each budget (``N = num_candidates(B)``).

    Returns:
        ``[len(budgets)]`` (or ``[len(budgets), R]`` for several rewards) rewards, averaged
        over prompts and Monte-Carlo draws.
    """
    if len(budgets) == 0:
        raise ValueError("budgets must not be empty")
    plan = schedule or PruningSchedule()
    multi = _check_inputs(intermediate, final, plan)  # once, not once per budget
    P, M = final.shape[:2]
    if order is None:
        order = torch.rand(
            P, check_positive_int("repeats", repeats), M, generator=generator, device=final.device
        ).argsort(-1)
    else:
        _check_order(order, P, M)
    out = []
    for b in budgets:
        n = cost.num_candidates(float(b), schedule, num_steps)
        if n < 1:
            raise ValueError(f"budget {b} buys no candidate under {cost}")
        # capping at the pool size is expected at the top of the budget range
        picks = _simulate(intermediate, final, plan, min(n, M), order, multi)
        out.append(picks.float().mean(dim=(0, 1)))
    return torch.stack(out)


def _check_inputs(intermediate: Tensor | None, final: Tensor, schedule: PruningSchedule) -> bool:
    multi = _check_tensors(intermediate if schedule.steps else None, final)
    if schedule.steps:
        if intermediate is None:
            raise ValueError("intermediate is required when the schedule prunes")
        if schedule.steps[-1] >= intermediate.shape[2]:
            raise ValueError(
                f"schedule steps {schedule.steps} out of range for {intermediate.shape[2]} steps"
            )
    return multi


def _check_order(order: Tensor, P: int, M: int) -> None:
    if order.shape[0] != P or order.shape[2] != M:
        raise ValueError(f"order must be [P={P}, repeats, M={M}], got {tuple(order.shape)}")


def _check_tensors(intermediate: Tensor | None, final: Tensor) -> bool:
    if final.dim() not in (2, 3):
        raise ValueError(f"final must be [P, M] or [P, M, R], got {tuple(final.shape)}")
    check_finite("final", final)
    multi = final.dim() == 3
    if intermediate is not None:
        want = final.dim() + 1
        if (
            intermediate.dim() != want
            or intermediate.shape[:2] != final.shape[:2]
            or (multi and intermediate.shape[3] != final.shape[2])
        ):
            raise ValueError(
                f"intermediate {tuple(intermediate.shape)} does not match final "
                f"{tuple(final.shape)}: expected [P, M, S] with final [P, M] or [P, M, S, R] "
                "with final [P, M, R]"
            )
        check_finite("intermediate", intermediate)
    return multi
