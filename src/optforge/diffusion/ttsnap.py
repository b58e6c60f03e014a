r"""TTSnap: pruned best-of-N sampling with noise-aware rewards.

Paper: Q. Yu, C. Song, M. Sun, Z. Yu, V. K. Verma, S. Roy, S. Negi, H. Li, D. Campbell,
"TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242.
Reference code: ``TerrysLearning/TTSnap`` (reward distillation and the offline budget
simulation; the online sampler was not released and is reconstructed here).

Best-of-N draws :math:`N` seeds, denoises each fully and keeps the one with the highest reward.
TTSnap runs all candidates in lock-step through an :math:`S`-step sampler and, at checkpoints
:math:`s_1 < \dots < s_K`, scores the intermediate clean-image estimate
:math:`\hat x_0^{(s)}` (Tweedie, :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)
/ \sqrt{\bar\alpha_t}`) with a *noise-aware* reward :math:`R_{s}` and keeps the best

.. math::

    m_k = \min\bigl(m_{k-1},\; \max(m_{\min}, \operatorname{round}(\alpha_k m_{k-1}))\bigr),
    \qquad m_0 = N,

candidates (Python's banker's rounding, as the reference). Survivors are denoised to the end and
the final pick is the argmax of the original reward :math:`R` on the clean images. With several
rewards, candidates are ranked per reward inside the current pool and the rank sums (Borda count)
decide, both at checkpoints and for the final pick.

The noise-aware rewards are copies of the reward model distilled on trajectories: at level
:math:`s` the student minimises :math:`\mathbb E\,(R_\phi(\hat x_0^{(s)}) - R(x_0))^2` against
the frozen teacher's score of the *final* image of the same trajectory, visiting levels from
nearly clean to noisiest (curriculum 14 → 0 for 20 steps), one fresh AdamW and a linear
1.0 → 0.5 learning-rate decay per level, a snapshot saved after each level.

Cost. With :math:`x` the cost of one candidate step and :math:`y` of one reward call,
best-of-N costs :math:`S x + y` per seed and TTSnap, with :math:`A_1 = 1`,
:math:`A_{k+1} = \alpha_k A_k`,

.. math::

    c = \sum_{k=1}^{K} A_k\bigl[(s_k - s_{k-1})x + y\bigr] + A_{K+1}\bigl[(S-1-s_K)x + y\bigr],

with :math:`s_0 = -1` (exact: reaching index :math:`s_1` takes :math:`s_1+1` network
evaluations). The reference uses :math:`s_0 = 0`, which charges an un-pruned seed
:math:`S-1` steps while best-of-N is charged :math:`S`; ``CostModel(convention="reference")``
reproduces the paper's numbers (51.864 TFLOPs for (2, 6, 11)/(0.4, 0.4, 0.5), x = 9.9, y = 1.2).

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

Choices where the spec marked NOT FOUND / VERIFY, and why:

* Ties: candidates are ordered by a *stable* descending sort (equal scores keep pool order);
  Borda ranks are competition ranks (number of pool members with a strictly smaller score), so
  for one reward the Borda order equals the score order, ties included. The reference breaks
  ties arbitrarily (``argpartition``).
* Survivors are kept in descending-score order (the online sampler and the offline simulation
  use the same helper, so they pick the same seed).
* Budget: under ``convention="exact"`` the number of seeds is the largest :math:`N` whose
  *realised* cost (with rounding and ``min_keep``) fits the budget, so ``cost_spent <= budget``
  always; under ``"reference"`` it is :math:`\lfloor B / c\rfloor` as in the paper.
* The budget metric (relative area gain, Simpson's rule on the budget grid, in %) is the
  reference implementation's; its name in the paper was not found.
* The distiller's optional Bradley-Terry pairwise and uncertainty-weighted terms (off by default
  in the reference) are not implemented; ``standardize=True`` (batch standardisation) is.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from optforge._core import (
    check_finite,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    require,
)

RewardFn = Callable[[Tensor, Any], Tensor]
IntermediateRewardFn = Callable[[Tensor, Any, int], Tensor]

__all__ = [
    "CostModel",
    "DDIMSampler",
    "DiffusersSampler",
    "NoiseAwareDistiller",
    "NoiseAwareReward",
    "PruningSchedule",
    "SamplerState",
    "SearchResult",
    "SteppableSampler",
    "TrajectoryDataset",
    "alignment_metrics",
    "best_of_n",
    "borda_scores",
    "relative_area_gain",
    "reward_budget_curve",
    "simulate_best_of_n",
    "simulate_ttsnap",
    "ttsnap_search",
]


# --------------------------------------------------------------------------------------------
# Schedule and costs
# --------------------------------------------------------------------------------------------


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
        for s in self.steps:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise ValueError(f"steps must be non-negative integers, got {self.steps!r}")
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
        if self.convention not in ("exact", "reference"):
            raise ValueError(f"convention must be 'exact' or 'reference', got {self.convention!r}")

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


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


def borda_scores(scores: Tensor) -> Tensor:
    """Rank-sum over rewards (Borda count) along the candidate dimension.

    Args:
        scores: ``[..., M, R]`` scores of ``M`` candidates under ``R`` rewards.

    Returns:
        ``[..., M]`` sums over rewards of the competition rank (number of candidates in the
        pool with a strictly smaller score; 0 = worst, ties share the lower rank).
    """
    values = scores.transpose(-1, -2).contiguous()  # [..., R, M]
    ordered = values.sort(dim=-1).values
    ranks = torch.searchsorted(ordered, values, side="left")
    return ranks.sum(dim=-2)


def _rank_order(scores: Tensor, multi: bool) -> Tensor:
    key = borda_scores(scores) if multi else scores
    return torch.sort(key, dim=-1, descending=True, stable=True).indices


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------


@dataclass
class SamplerState:
    """Lock-step state of a pool: current latents, per-row conditioning, seed indices."""

    x: Tensor
    cond: Any = None
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


class SteppableSampler(Protocol):
    """One lock-step step for a batch of candidates (what the search needs of a sampler)."""

    num_steps: int

    def init(
        self, n: int, cond: Any, generator: torch.Generator | None, noise: Tensor | None = None
    ) -> Any: ...

    def step(self, state: Any, step_index: int) -> tuple[Any, Tensor]: ...

    def select(self, state: Any, index: Tensor) -> Any: ...

    def decode(self, x0_hat: Tensor) -> Tensor: ...


def _rows(cond: Any, n: int) -> Any:
    if isinstance(cond, Tensor) and cond.dim() > 0 and cond.shape[0] == 1 and n != 1:
        return cond.expand(n, *cond.shape[1:])
    return cond


def _select_rows(cond: Any, index: Tensor, n: int) -> Any:
    if isinstance(cond, Tensor) and cond.dim() > 0 and cond.shape[0] == n:
        return cond.index_select(0, index.to(cond.device))
    return cond


class _BaseSampler:
    """Shared init/select/decode of the built-in samplers."""

    sample_shape: tuple[int, ...]
    num_steps: int
    _decode: Callable[[Tensor], Tensor] | None
    init_scale: float = 1.0
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float32

    def init(
        self,
        n: int,
        cond: Any = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerState:
        """Fresh pool of ``n`` seeds (``noise`` overrides the draw; its rows are the seeds)."""
        if noise is None:
            n = check_positive_int("n", n)
            device = generator.device if generator is not None else self.device
            noise = torch.randn(
                n, *self.sample_shape, generator=generator, device=device, dtype=self.dtype
            )
        elif tuple(noise.shape[1:]) != tuple(self.sample_shape) or noise.shape[0] != n:
            raise ValueError(
                f"noise must have shape [{n}, *{tuple(self.sample_shape)}], got "
                f"{tuple(noise.shape)}"
            )
        index = torch.arange(n, device=noise.device)
        return SamplerState(noise * self.init_scale, _rows(cond, n), index)

    def select(self, state: SamplerState, index: Tensor) -> SamplerState:
        """Keep the rows ``index`` of every per-candidate tensor of the state."""
        n = state.x.shape[0]
        index = index.to(state.x.device)
        return SamplerState(
            state.x.index_select(0, index),
            _select_rows(state.cond, index, n),
            state.index.index_select(0, index),
        )

    def decode(self, x0_hat: Tensor) -> Tensor:
        """Latents to images (identity unless a ``decode`` callable was given)."""
        return x0_hat if self._decode is None else self._decode(x0_hat)


class DDIMSampler(_BaseSampler):
    r"""Deterministic DDIM (:math:`\eta = 0`) over an ε-prediction callable, plain torch.

    Per step with :math:`t = t_s`, :math:`t' = t_{s+1}`:
    :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\hat\varepsilon)/\sqrt{\bar\alpha_t}`
    (optionally clipped), :math:`x_{t'} = \sqrt{\bar\alpha_{t'}}\hat x_0 +
    \sqrt{1-\bar\alpha_{t'}}\hat\varepsilon`; after the last step the state is :math:`\hat x_0`
    (``set_alpha_to_one`` in diffusers' ``DDIMScheduler``).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> eps`` with ``t`` a ``[B]`` long tensor.
        alphas_cumprod: ``[T]`` cumulative products :math:`\bar\alpha_t`.
        timesteps: ``[S]`` decreasing integer timesteps, e.g. ``linspace(999, 0, 20).round()``.
        sample_shape: Shape of one sample (without the batch dimension).
        clip_x0: Clamp :math:`\hat x_0` to ``[-clip_x0, clip_x0]`` (``None``: no clipping).
        decode: Optional latents → images callable applied before rewards.
    """

    def __init__(
        self,
        denoiser: Callable[[Tensor, Tensor, Any], Tensor],
        alphas_cumprod: Tensor,
        timesteps: Sequence[int] | Tensor,
        sample_shape: Sequence[int],
        *,
        clip_x0: float | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(denoiser):
            raise TypeError("denoiser must be callable: denoiser(x_t, t, cond) -> eps")
        self.denoiser = denoiser
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        if self.timesteps.dim() != 1 or len(self.timesteps) < 1:
            raise ValueError("timesteps must be a non-empty 1-D sequence")
        if (self.timesteps[1:] >= self.timesteps[:-1]).any():
            raise ValueError("timesteps must be strictly decreasing")
        if int(self.timesteps.max()) >= len(self.alphas_cumprod) or int(self.timesteps.min()) < 0:
            raise ValueError("timesteps must index into alphas_cumprod")
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_steps = len(self.timesteps)
        self.clip_x0 = None if clip_x0 is None else check_positive("clip_x0", clip_x0)
        self._decode = decode
        self.dtype = (
            self.alphas_cumprod.dtype
            if self.alphas_cumprod.is_floating_point()
            else (torch.float32)
        )
        self.device = self.alphas_cumprod.device

    def step(self, state: SamplerState, step_index: int) -> tuple[SamplerState, Tensor]:
        """Advance every row one step; return the new state and :math:`\\hat x_0`."""
        x = state.x
        t = int(self.timesteps[step_index])
        abar = self.alphas_cumprod.to(x)
        a_t = abar[t]
        eps = self.denoiser(x, torch.full((x.shape[0],), t, device=x.device), state.cond)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        if step_index + 1 < self.num_steps:
            a_prev = abar[int(self.timesteps[step_index + 1])]
            x_next = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        else:
            x_next = x0
        return SamplerState(x_next, state.cond, state.index), x0


class DiffusersSampler(_BaseSampler):
    """Adapter for a diffusers model and scheduler (``pip install 'optforge[diffusion]'``).

    Each step calls ``model(scheduler.scale_model_input(x, t), t, **model_kwargs)`` and
    ``scheduler.step(out, t, x)``; the estimate is ``pred_original_sample`` (DDPM, DDIM, Euler)
    or ``x0_fn(x_t, model_output, t, scheduler)`` for schedulers that do not return it (e.g.
    flow matching: ``x_t - sigma_t * v``). The scheduler must not be shared between concurrent
    searches; ``set_timesteps`` is called at every :meth:`init`.

    Args:
        model: ``UNet2DModel``-like module (output with ``.sample`` or a tensor).
        scheduler: A diffusers scheduler instance.
        sample_shape: Shape of one sample (``(C, H, W)``).
        num_inference_steps: Number of sampler steps ``S``.
        model_kwargs: Extra keyword arguments for every model call (broadcast to all rows).
        cond_key: If given, the per-row ``cond`` tensor is passed as ``model(..., cond_key=cond)``
            and pruned with the rows.
        x0_fn: Fallback ``x0_fn(x_t, model_output, t, scheduler) -> x0_hat``.
        decode: Latents → images (e.g. a VAE decode) applied before rewards.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        scheduler: Any,
        sample_shape: Sequence[int],
        *,
        num_inference_steps: int = 20,
        model_kwargs: Mapping[str, Any] | None = None,
        cond_key: str | None = None,
        x0_fn: Callable[[Tensor, Tensor, Tensor, Any], Tensor] | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        require("diffusers", "diffusion")
        self.model = model
        self.scheduler = scheduler
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_inference_steps = check_positive_int("num_inference_steps", num_inference_steps)
        self.model_kwargs = dict(model_kwargs or {})
        self.cond_key = cond_key
        self.x0_fn = x0_fn
        self._decode = decode
        scheduler.set_timesteps(self.num_inference_steps)
        self.num_steps = len(scheduler.timesteps)
        self.init_scale = float(getattr(scheduler, "init_noise_sigma", 1.0))
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        if first is not None:
            self.device, self.dtype = first.device, first.dtype

    def init(
        self,
        n: int,
        cond: Any = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerState:
        """Reset the scheduler's timesteps and draw a fresh pool (see :class:`DDIMSampler`)."""
        self.scheduler.set_timesteps(self.num_inference_steps)
        if hasattr(self.scheduler, "_step_index"):
            self.scheduler._step_index = None
        return super().init(n, cond, generator, noise)

    def step(self, state: SamplerState, step_index: int) -> tuple[SamplerState, Tensor]:
        """One scheduler step for every row; returns the new state and ``pred_original_sample``."""
        x = state.x
        t = self.scheduler.timesteps[step_index]
        kwargs = dict(self.model_kwargs)
        if self.cond_key is not None:
            kwargs[self.cond_key] = state.cond
        out = self.model(self.scheduler.scale_model_input(x, t), t, **kwargs)
        out = getattr(out, "sample", out)
        if isinstance(out, tuple):
            out = out[0]
        res = self.scheduler.step(out, t, x, return_dict=True)
        x0 = getattr(res, "pred_original_sample", None)
        if x0 is None:
            if self.x0_fn is None:
                raise ValueError(
                    f"{type(self.scheduler).__name__}.step returns no pred_original_sample; "
                    "pass x0_fn(x_t, model_output, t, scheduler) -> x0_hat"
                )
            x0 = self.x0_fn(x, out, t, self.scheduler)
        return SamplerState(res.prev_sample, state.cond, state.index), x0


# --------------------------------------------------------------------------------------------
# Online search
# --------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Outcome of :func:`ttsnap_search` / :func:`best_of_n`.

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


def _call_reward(fn: Callable[..., Tensor], images: Tensor, cond: Any, *extra: Any) -> Tensor:
    out = fn(images, cond, *extra)
    if not isinstance(out, Tensor):
        raise TypeError(f"reward must return a tensor, got {type(out).__name__}")
    m = images.shape[0]
    if out.dim() not in (1, 2) or out.shape[0] != m:
        raise ValueError(f"reward must return shape [{m}] or [{m}, R], got {tuple(out.shape)}")
    return check_finite("reward output", out.detach())


def ttsnap_search(
    sampler: SteppableSampler,
    final_reward: RewardFn,
    intermediate_reward: IntermediateRewardFn | Mapping[int, RewardFn] | None,
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


def _cond_of(state: Any, default: Any) -> Any:
    return state.cond if isinstance(state, SamplerState) else default


def best_of_n(
    sampler: SteppableSampler,
    reward: RewardFn,
    n: int | None = None,
    cond: Any = None,
    *,
    budget: float | None = None,
    cost: CostModel | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> SearchResult:
    """Best-of-N: denoise every seed fully, return the best by ``reward`` (no pruning)."""
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


# --------------------------------------------------------------------------------------------
# Offline simulation and metrics
# --------------------------------------------------------------------------------------------


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
    multi = _check_tensors(intermediate if schedule.steps else None, final)
    n = check_positive_int("n", n)
    P, M = final.shape[:2]
    if n > M:
        warnings.warn(f"n={n} exceeds the pool size {M}; capped", stacklevel=2)
        n = M
    if schedule.steps:
        if intermediate is None:
            raise ValueError("intermediate is required when the schedule prunes")
        if schedule.steps[-1] >= intermediate.shape[2]:
            raise ValueError(
                f"schedule steps {schedule.steps} out of range for {intermediate.shape[2]} steps"
            )
    if order is None:
        repeats = check_positive_int("repeats", repeats)
        order = torch.rand(P, repeats, M, generator=generator, device=final.device).argsort(-1)
    elif order.shape[0] != P or order.shape[2] != M:
        raise ValueError(f"order must be [P={P}, repeats, M={M}], got {tuple(order.shape)}")
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
    best = _rank_order(fin, multi)[..., :1]
    picked = pool.gather(2, best)[..., 0]
    if return_index:
        return picked
    if multi:
        return fin.gather(2, best[..., None].expand(P, reps, 1, final.shape[-1]))[:, :, 0]
    return fin.gather(2, best)[..., 0]


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
    if order is None:
        P, M = final.shape[:2]
        order = torch.rand(
            P, check_positive_int("repeats", repeats), M, generator=generator, device=final.device
        ).argsort(-1)
    out = []
    for b in budgets:
        n = cost.num_candidates(float(b), schedule, num_steps)
        if n < 1:
            raise ValueError(f"budget {b} buys no candidate under {cost}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # capping at the pool size is expected at the top
            picks = simulate_ttsnap(intermediate, final, schedule, n, order=order)
        out.append(picks.float().mean(dim=(0, 1)))
    return torch.stack(out)


def relative_area_gain(
    budgets: Sequence[float] | Tensor,
    rewards_method: Sequence[float] | Tensor,
    rewards_baseline: Sequence[float] | Tensor,
) -> float:
    r"""Relative area gain in % of a reward-vs-budget curve over the baseline's.

    :math:`\mathrm{Gain} = 100\,[\int (r_M - r_0)\,dB - \int (r_0(B) - r_0)\,dB]
    / \int (r_0(B) - r_0)\,dB` with :math:`r_0 = r_\text{baseline}(B_\min)`, integrals by
    Simpson's rule (``scipy.integrate.simpson``) on the budget grid.

    Raises:
        ValueError: if the baseline's area above its first value is not positive.
    """
    from scipy.integrate import simpson

    b = torch.as_tensor(budgets, dtype=torch.float64).cpu().numpy()
    rm = torch.as_tensor(rewards_method, dtype=torch.float64).cpu().numpy()
    rb = torch.as_tensor(rewards_baseline, dtype=torch.float64).cpu().numpy()
    if not (b.ndim == rm.ndim == rb.ndim == 1 and len(b) == len(rm) == len(rb) >= 2):
        raise ValueError("budgets and both reward curves must be 1-D of the same length >= 2")
    r0 = rb[0]
    area_b = float(simpson(rb - r0, x=b))
    if not area_b > 0:
        raise ValueError(f"the baseline's area above r(B_min) is not positive ({area_b})")
    area_m = float(simpson(rm - r0, x=b))
    return 100.0 * (area_m - area_b) / area_b


def alignment_metrics(
    pred: Tensor, final: Tensor, alphas: Sequence[float] | None = None
) -> dict[str, float]:
    """How well intermediate scores rank the final rewards, per prompt then averaged.

    Args:
        pred: ``[P, M]`` predicted (intermediate) scores.
        final: ``[P, M]`` teacher rewards of the final images.
        alphas: Top fractions for selection accuracy and gap (default 0.05, 0.10, …, 0.95).

    Returns:
        ``kendall`` (τ-b, ``scipy.stats.kendalltau``), ``top_acc``/``top_gap`` averaged over
        ``alphas``, ``top_acc@0.25``/``top_gap@0.25``, and ``mse``.
    """
    from scipy.stats import kendalltau

    if pred.shape != final.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and final must both be [P, M], got {tuple(pred.shape)}, {tuple(final.shape)}"
        )
    check_finite("pred", pred)
    check_finite("final", final)
    alphas = [0.05 * i for i in range(1, 20)] if alphas is None else list(alphas)
    pred64, fin64 = pred.double().cpu(), final.double().cpu()
    P, M = pred64.shape
    taus = [float(kendalltau(pred64[p].numpy(), fin64[p].numpy()).statistic) for p in range(P)]
    order = _rank_order(pred64, False)
    best_all = fin64.max(dim=1).values

    def top(alpha: float) -> tuple[float, float]:
        k = max(1, round(alpha * M))
        chosen = fin64.gather(1, order[:, :k])
        best_top = chosen.max(dim=1).values
        acc = (best_top >= best_all).double().mean()
        return float(acc), float((best_all - best_top).mean())

    grid = [top(a) for a in alphas]
    acc25, gap25 = top(0.25)
    return {
        "kendall": float(torch.tensor(taus).nanmean()),
        "top_acc": sum(g[0] for g in grid) / len(grid),
        "top_gap": sum(g[1] for g in grid) / len(grid),
        "top_acc@0.25": acc25,
        "top_gap@0.25": gap25,
        "mse": float(((pred64 - fin64) ** 2).mean()),
    }


# --------------------------------------------------------------------------------------------
# Noise-aware reward distillation
# --------------------------------------------------------------------------------------------


class TrajectoryDataset(torch.utils.data.Dataset):
    """Intermediate estimates of trajectories with the teacher's score of their final image.

    Args:
        estimates: ``[T, L, ...]`` decoded estimates at the ``L`` stored steps.
        targets: ``[T, ...]`` teacher outputs on the final image (regression targets).
        steps: The step index of each of the ``L`` stored estimates.
        cond: Optional ``[T, ...]`` conditioning handed to the model as ``model(x, cond)``.
    """

    def __init__(
        self,
        estimates: Tensor,
        targets: Tensor,
        steps: Sequence[int],
        cond: Tensor | None = None,
    ) -> None:
        steps = [int(s) for s in steps]
        if estimates.dim() < 2 or estimates.shape[1] != len(steps):
            raise ValueError(
                f"estimates must be [T, {len(steps)}, ...] for {len(steps)} steps, got "
                f"{tuple(estimates.shape)}"
            )
        if targets.shape[0] != estimates.shape[0] or (
            cond is not None and cond.shape[0] != estimates.shape[0]
        ):
            raise ValueError("estimates, targets and cond must have the same first dimension")
        check_finite("estimates", estimates)
        check_finite("targets", targets)
        self.estimates, self.targets, self.cond = estimates, targets, cond
        self.steps = steps
        self._pos = {s: i for i, s in enumerate(steps)}

    def __len__(self) -> int:
        return self.estimates.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Any]:
        c = None if self.cond is None else self.cond[i]
        return self.estimates[i], self.targets[i], c

    def at(self, step: int) -> Tensor:
        """``[T, ...]`` estimates at ``step``."""
        if step not in self._pos:
            raise ValueError(f"step {step} not stored; have {self.steps}")
        return self.estimates[:, self._pos[step]]

    @classmethod
    def generate(
        cls,
        sampler: SteppableSampler,
        teacher: Callable[..., Tensor],
        n: int,
        steps: Sequence[int],
        *,
        cond: Any = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> TrajectoryDataset:
        """Sample ``n`` trajectories, keep decoded estimates at ``steps``, label by the teacher.

        ``teacher(images)`` (or ``teacher(images, cond)`` when ``cond`` is given) is applied to
        the final decoded image of each trajectory.
        """
        n = check_positive_int("n", n)
        bs = n if batch_size is None else check_positive_int("batch_size", batch_size)
        wanted = set(int(s) for s in steps)
        est, tgt = [], []
        with torch.no_grad():
            for lo in range(0, n, bs):
                m = min(bs, n - lo)
                state = sampler.init(m, cond, generator)
                keep = []
                x0 = None
                for s in range(sampler.num_steps):
                    state, x0 = sampler.step(state, s)
                    if s in wanted:
                        keep.append(sampler.decode(x0))
                final = sampler.decode(x0)
                c = _cond_of(state, cond)
                tgt.append(teacher(final) if cond is None else teacher(final, c))
                est.append(torch.stack(keep, dim=1))
        return cls(torch.cat(est), torch.cat(tgt), sorted(wanted))


class NoiseAwareDistiller:
    """Self-distillation of a reward model into noise-aware copies, with a curriculum.

    Args:
        teacher: The frozen reward model (a copy is trained; the teacher is not modified).
        levels: Step levels visited in order (default 14, 13, …, 0).
        epochs_per_level: Epochs over the dataset per level (ignored if ``steps_per_level``).
        steps_per_level: Optional fixed number of optimizer steps per level.
        optimizer_factory: ``params -> torch.optim.Optimizer``, called afresh at each level.
        end_lr_scale: The learning rate decays linearly from 1.0× to this within a level.
        max_grad_norm: Gradient-norm clip (``None``: no clipping).
        standardize: Standardise predictions and targets over the batch before the MSE.
        snapshot_each_level: Keep a copy after every level (otherwise only the last model).
        seed: Seed of the batch shuffling.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        levels: Sequence[int] = tuple(range(14, -1, -1)),
        epochs_per_level: int = 1,
        steps_per_level: int | None = None,
        optimizer_factory: Callable[[Any], torch.optim.Optimizer] | None = None,
        end_lr_scale: float = 0.5,
        max_grad_norm: float | None = 5.0,
        standardize: bool = False,
        snapshot_each_level: bool = True,
        seed: int = 2000,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError("teacher must be an nn.Module")
        self.teacher = teacher
        self.levels = [int(s) for s in levels]
        if not self.levels:
            raise ValueError("levels must not be empty")
        self.epochs_per_level = check_positive_int("epochs_per_level", epochs_per_level)
        self.steps_per_level = (
            None
            if steps_per_level is None
            else check_positive_int("steps_per_level", steps_per_level)
        )
        self.optimizer_factory = optimizer_factory or (
            lambda p: torch.optim.AdamW(p, lr=3e-6, weight_decay=0.01)
        )
        self.end_lr_scale = check_in_range("end_lr_scale", end_lr_scale, 0.0, 1.0)
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)
        )
        self.standardize = bool(standardize)
        self.snapshot_each_level = bool(snapshot_each_level)
        self.seed = int(seed)
        self.history: dict[int, list[float]] = {}
        self.optimizers: dict[int, torch.optim.Optimizer] = {}

    def fit(self, dataset: TrajectoryDataset, batch_size: int = 100) -> dict[int, nn.Module]:
        """Train level by level; return level → frozen snapshot (or ``{last: model}``)."""
        batch_size = check_positive_int("batch_size", batch_size)
        student = copy.deepcopy(self.teacher)
        student.train()
        for p in student.parameters():
            p.requires_grad_(True)
        g = torch.Generator().manual_seed(self.seed)
        snapshots: dict[int, nn.Module] = {}
        T = len(dataset)
        for level in self.levels:
            inputs = dataset.at(level)
            if self.steps_per_level is None:
                per_epoch = math.ceil(T / batch_size)
                total = per_epoch * self.epochs_per_level
            else:
                total = self.steps_per_level
            opt = self.optimizer_factory(student.parameters())
            end = self.end_lr_scale
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i, total=total, end=end: 1.0 - (1.0 - end) * i / max(1, total)
            )
            losses: list[float] = []
            perm = torch.empty(0, dtype=torch.long)
            for _ in range(total):
                if perm.numel() < batch_size and not (perm.numel() and perm.numel() == T):
                    perm = torch.cat([perm, torch.randperm(T, generator=g)])
                idx, perm = perm[: min(batch_size, T)], perm[min(batch_size, T) :]
                idx = idx.to(inputs.device)
                x, y = inputs[idx], dataset.targets[idx]
                pred = student(x) if dataset.cond is None else student(x, dataset.cond[idx])
                if pred.shape != y.shape:
                    raise ValueError(
                        f"model output {tuple(pred.shape)} does not match targets {tuple(y.shape)}"
                    )
                if self.standardize:
                    pred = (pred - pred.mean(0)) / (pred.std(0) + 1e-6)
                    y = (y - y.mean(0)) / (y.std(0) + 1e-6)
                loss = torch.mean((pred - y) ** 2)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite distillation loss at level {level}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(student.parameters(), self.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
            self.history[level] = losses
            self.optimizers[level] = opt
            if self.snapshot_each_level:
                snapshots[level] = _frozen_copy(student)
        if not self.snapshot_each_level:
            snapshots[self.levels[-1]] = _frozen_copy(student)
        return snapshots


def _frozen_copy(model: nn.Module) -> nn.Module:
    snap = copy.deepcopy(model).eval()
    for p in snap.parameters():
        p.requires_grad_(False)
    return snap


class NoiseAwareReward(nn.Module):
    """Routes a step index to its noise-aware snapshot (the teacher where none exists).

    ``forward(images, cond, step)`` computes ``head(model(images), cond)`` with ``model`` the
    snapshot for ``step`` (or, with ``route="last"``, the snapshot trained last for every
    step up to the highest level), falling back to the teacher for steps without one.

    Args:
        teacher: The original reward model.
        snapshots: Level → model, as returned by :meth:`NoiseAwareDistiller.fit`.
        head: Optional ``head(model_output, cond) -> [M]`` (default: the output itself).
        route: ``"per_level"`` (paper) or ``"last"`` (one model for all distilled levels).
    """

    def __init__(
        self,
        teacher: nn.Module,
        snapshots: Mapping[int, nn.Module],
        head: Callable[[Tensor, Any], Tensor] | None = None,
        route: Literal["per_level", "last"] = "per_level",
    ) -> None:
        super().__init__()
        if route not in ("per_level", "last"):
            raise ValueError(f"route must be 'per_level' or 'last', got {route!r}")
        self.teacher = teacher
        self.snapshots = nn.ModuleDict({str(int(k)): v for k, v in snapshots.items()})
        self.levels = [int(k) for k in snapshots]
        self.head = head
        self.route = route

    def model_for(self, step: int) -> nn.Module:
        """The model used at ``step``."""
        if self.route == "last" and self.levels and step <= max(self.levels):
            return self.snapshots[str(self.levels[-1])]
        return self.snapshots[str(step)] if str(step) in self.snapshots else self.teacher  # noqa: SIM401

    def forward(self, images: Tensor, cond: Any, step: int) -> Tensor:
        out = self.model_for(int(step))(images)
        return out if self.head is None else self.head(out, cond)
