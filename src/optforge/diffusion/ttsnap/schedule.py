r"""TTSnap's pruning schedule and its compute accounting.

At checkpoints :math:`s_1 < \dots < s_K` of an :math:`S`-step sampler the pool of candidates
is cut to

.. math::

    m_k = \min\bigl(m_{k-1},\; \max(m_{\min}, \operatorname{round}(\alpha_k m_{k-1}))\bigr),
    \qquad m_0 = N,

with Python's banker's rounding, as the reference code (Q. Yu et al., "TTSnap: Test-Time
Scaling of Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242).

Cost. With :math:`x` the cost of one candidate step and :math:`y` of one reward call,
best-of-N costs :math:`S x + y` per seed and TTSnap, with :math:`A_1 = 1`,
:math:`A_{k+1} = \alpha_k A_k`,

.. math::

    c = \sum_{k=1}^{K} A_k\bigl[(s_k - s_{k-1})x + y\bigr] + A_{K+1}\bigl[(S-1-s_K)x + y\bigr],

with :math:`s_0 = -1` (reaching index :math:`s_1` takes :math:`s_1+1` network evaluations).
``CostModel(convention="reference")`` uses the reference's :math:`s_0 = 0` and reproduces the
paper's 51.864 TFLOPs for (2, 6, 11)/(0.4, 0.4, 0.5), x = 9.9, y = 1.2.

Choices: under ``convention="exact"`` the number of seeds a budget buys is the largest
:math:`N` whose *realised* cost (rounding and ``min_keep`` included) fits, so a search never
spends more than its budget; under ``"reference"`` it is :math:`\lfloor B / c\rfloor`.

Example::

    from optforge.diffusion.ttsnap import CostModel, PruningSchedule

    schedule = PruningSchedule((2, 6, 11), (0.4, 0.4, 0.5))
    schedule.survivors(100)                                   # [40, 16, 8]
    CostModel(9.9, 1.2, "reference").per_candidate(schedule, 20)   # 51.864
    CostModel(1.0, 0.1).num_candidates(1000.0, schedule, 20)       # 161 seeds
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from optforge._core import (
    check_choice,
    check_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = ["CostModel", "PruningSchedule"]


@dataclass(frozen=True)
class PruningSchedule:
    """Checkpoints and keep ratios of a pruning schedule.

    Args:
        steps: Strictly increasing 0-based step indices at which the pool is pruned; each must
            be below ``num_steps - 1`` of the sampler (checked by :meth:`validate`).
        keep: Fraction of the pool kept at each checkpoint, each in (0, 1].
        min_keep: Never keep fewer than this many candidates (capped by the pool size).
    """

    steps: tuple[int, ...] = ()
    keep: tuple[float, ...] = ()
    min_keep: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "keep", tuple(float(a) for a in self.keep))
        if len(self.steps) != len(self.keep):
            raise ValueError(
                f"steps and keep must have the same length, got {len(self.steps)} and "
                f"{len(self.keep)}"
            )
        steps = tuple(check_nonnegative_int(f"steps[{i}]", s) for i, s in enumerate(self.steps))
        object.__setattr__(self, "steps", steps)
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must be strictly increasing, got {self.steps!r}")
        for a in self.keep:
            check_in_range("keep", a, 0.0, 1.0, low_inclusive=False)
        check_positive_int("min_keep", self.min_keep)

    def validate(self, num_steps: int) -> None:
        """Raise ``ValueError`` if a checkpoint is not in ``[0, num_steps - 2]``."""
        check_positive_int("num_steps", num_steps)
        if self.steps and self.steps[-1] > num_steps - 2:
            raise ValueError(
                f"steps must lie in [0, num_steps - 2] = [0, {num_steps - 2}] (the last step "
                f"yields the final image), got {self.steps!r}"
            )

    def survivors(self, n: int) -> list[int]:
        """Pool sizes after each checkpoint for an initial pool of ``n`` candidates."""
        m = check_positive_int("n", n)
        sizes = []
        for a in self.keep:
            m = min(m, max(self.min_keep, round(a * m)))
            sizes.append(m)
        return sizes


@dataclass(frozen=True)
class CostModel:
    """Compute accounting: ``step_cost`` per candidate step, ``reward_cost`` per reward call.

    Args:
        step_cost: Cost ``x`` of one denoising step of one candidate (> 0).
        reward_cost: Cost ``y`` of one reward evaluation, decoding included (>= 0).
        convention: ``"exact"`` (an un-pruned seed costs ``S x`` plus its reward calls) or
            ``"reference"`` (the paper's formula with ``s_0 = 0``, one step short).
    """

    step_cost: float = 1.0
    reward_cost: float = 0.0
    convention: Literal["exact", "reference"] = "exact"

    def __post_init__(self) -> None:
        check_positive("step_cost", self.step_cost)
        check_nonnegative("reward_cost", self.reward_cost)
        check_choice("convention", self.convention, ("exact", "reference"))

    def per_candidate(self, schedule: PruningSchedule | None, num_steps: int) -> float:
        """Expected cost per initial seed (continuous keep ratios, no rounding)."""
        schedule = schedule or PruningSchedule()
        schedule.validate(num_steps)
        x, y = self.step_cost, self.reward_cost
        if not schedule.steps:  # best-of-N: S x + y under both conventions
            return num_steps * x + y
        prev = -1 if self.convention == "exact" else 0
        alive, total = 1.0, 0.0
        for s, a in zip(schedule.steps, schedule.keep, strict=True):
            total += alive * ((s - prev) * x + y)
            alive *= a
            prev = s
        return total + alive * ((num_steps - 1 - prev) * x + y)

    def search_cost(self, n: int, schedule: PruningSchedule | None, num_steps: int) -> float:
        """Exact cost of one search with ``n`` seeds (pool sizes rounded as the sampler does)."""
        schedule = schedule or PruningSchedule()
        schedule.validate(num_steps)
        sizes = [check_positive_int("n", n), *schedule.survivors(n)]
        bounds = [-1, *schedule.steps, num_steps - 1]
        steps = sum(m * (hi - lo) for m, lo, hi in zip(sizes, bounds[:-1], bounds[1:], strict=True))
        return steps * self.step_cost + sum(sizes) * self.reward_cost

    def num_candidates(
        self, budget: float, schedule: PruningSchedule | None, num_steps: int
    ) -> int:
        """Number of seeds a budget buys (0 if not even one).

        ``"exact"``: the largest ``n`` with :meth:`search_cost` ``<= budget``.
        ``"reference"``: ``floor(budget / per_candidate)`` as in the paper.
        """
        check_positive("budget", budget)
        if self.convention == "reference":
            return math.floor(budget / self.per_candidate(schedule, num_steps) + 1e-9)
        schedule = schedule or PruningSchedule()
        first = (schedule.steps[0] + 1) if schedule.steps else num_steps
        lo, hi = 0, int(budget // (first * self.step_cost)) + 1  # cost(hi) > budget
        while hi - lo > 1:  # search_cost is non-decreasing in n
            mid = (lo + hi) // 2
            if self.search_cost(mid, schedule, num_steps) <= budget:
                lo = mid
            else:
                hi = mid
        return lo
