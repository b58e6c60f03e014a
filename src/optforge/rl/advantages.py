r"""Advantages for grouped rewards: plain, GRPO, leave-one-out (RLOO) and optimal baselines.

For B prompts with G responses each (``N = B·G``, groups contiguous), rewards :math:`r_{ij}`,
scores :math:`s_{ij} = \nabla_\theta \log\pi_\theta(y_{ij}\mid x_i)` and per-sample loss weights
:math:`c_{ij}` (see :func:`~optforge.rl.loss_coefficients`), the policy-gradient estimator is

.. math::

    \hat g = \frac1N \sum_{ij} c_{ij}\,(r_{ij} - b_{ij})\, s_{ij},
    \qquad
    b^*(x) = \frac{\mathbb E[\lVert c\,s\rVert^2 r \mid x]}{\mathbb E[\lVert c\,s\rVert^2 \mid x]}.

:math:`b^*` minimises :math:`\operatorname{tr}\operatorname{Cov}\hat g`; it is estimated
leave-one-out, :math:`b_{ij} = \sum_{k\ne j} w_{ik} r_{ik} / \sum_{k\ne j} w_{ik}` with
:math:`w = c^2\lVert s\rVert^2`, so :math:`b_{ij}` does not depend on :math:`y_{ij}` and
:math:`\hat g` stays unbiased (fallback to the RLOO mean when the other weights sum to < eps).
Equal weights give RLOO exactly. :func:`advantages` also offers none / batch mean / group mean
(GRPO) / RLOO and TRL's ``scale_rewards`` ("none", "group", "batch"; std + 1e-4 as in TRL).

Paper: Zixun Huang, Jiayi Sheng, Zeyu Zheng, "OBLR-PO: A Theoretical Framework for Stable
Reinforcement Learning", arXiv:2511.23310 (2025).

Choices: no std normalisation by default (the theory is for unnormalised advantages); the
optimal baseline uses the loss-consistent weights :math:`c^2\lVert s\rVert^2`.

Example::

    w = score_sqnorms(model, ids, attn, resp)                  # [N] = ||s_i||²
    adv = advantages(rewards, group_size=8, baseline="optimal", weights=w)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_device,
    check_finite,
    check_nonnegative,
    check_not_meta,
    check_positive_int,
)

__all__ = [
    "BASELINES",
    "SCALE_REWARDS",
    "TRL_STD_EPS",
    "Baseline",
    "ScaleRewards",
    "advantages",
    "optimal_baseline",
]

Baseline = Literal["none", "batch_mean", "group_mean", "rloo", "optimal", "optimal_ingroup"]
ScaleRewards = Literal["none", "group", "batch"]

BASELINES: tuple[str, ...] = (
    "none",
    "batch_mean",
    "group_mean",
    "rloo",
    "optimal",
    "optimal_ingroup",
)
SCALE_REWARDS: tuple[str, ...] = ("none", "group", "batch")
_GROUP_BASELINES = ("group_mean", "rloo", "optimal", "optimal_ingroup")
#: TRL's epsilon in ``(r - mean) / (std + 1e-4)``.
TRL_STD_EPS = 1e-4


def advantages(
    rewards: Tensor,
    group_size: int,
    *,
    baseline: Baseline = "optimal",
    weights: Tensor | None = None,
    scale_rewards: ScaleRewards = "none",
    eps: float = 1e-12,
) -> Tensor:
    """Advantages ``r - b`` for grouped rewards, optionally divided by a std (``scale_rewards``).

    Args:
        rewards: ``[B*G]`` (groups contiguous, TRL's layout) or ``[B, G]`` float rewards.
        group_size: G, responses per prompt (TRL's ``num_generations``).
        baseline: ``"none"`` (b = 0), ``"batch_mean"`` (mean of all N rewards, self-inclusive),
            ``"group_mean"`` (GRPO, self-inclusive), ``"rloo"`` (leave-one-out group mean,
            unbiased), ``"optimal"`` (gradient-weighted leave-one-out, unbiased) or
            ``"optimal_ingroup"`` (gradient-weighted, self-inclusive).
        weights: Per-sample weights ``w ≈ ||c·s||²`` with the shape of ``rewards``; required for the
            optimal baselines (see :func:`~optforge.rl.score_sqnorms`).
        scale_rewards: ``"none"``, ``"group"`` (divide by the group's std + 1e-4, GRPO) or
            ``"batch"`` (by the batch std + 1e-4). Stds are unbiased, as in TRL.
        eps: Weight sums ≤ eps fall back to the (leave-one-out) plain mean (``eps >= 0``: a
            negative ``eps`` would divide all-zero weights by their zero sum).

    Returns:
        Advantages with the shape of ``rewards`` (detached from any graph).

    Raises:
        ValueError: a bad name, ``group_size`` < 2 for a group baseline or group scaling, rewards
            whose length is not a multiple of ``group_size``, non-finite rewards or bad weights.
    """
    check_choice("baseline", baseline, BASELINES)
    check_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    check_nonnegative("eps", eps)
    g = check_positive_int("group_size", group_size)
    if g < 2 and (baseline in _GROUP_BASELINES or scale_rewards == "group"):
        raise ValueError(
            f"group_size must be >= 2 for baseline={baseline!r} / scale_rewards={scale_rewards!r} "
            f"(a group of one has no other sample to compare with), got {group_size}"
        )
    r = _grouped("rewards", rewards, g).detach()
    check_finite("rewards", r)
    if baseline in ("optimal", "optimal_ingroup"):
        if weights is None:
            raise ValueError(f"baseline={baseline!r} needs weights (per-sample ||score||²)")
        w = _as_grouped_weights(weights, rewards, r)
        b = optimal_baseline(r, w, g, leave_one_out=baseline == "optimal", eps=eps)
    elif baseline == "none":
        b = torch.zeros_like(r)
    elif baseline == "batch_mean":
        b = r.mean().expand_as(r)
    elif baseline == "group_mean":
        b = r.mean(dim=1, keepdim=True).expand_as(r)
    else:  # rloo
        b = (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    adv = r - b
    if scale_rewards == "group":
        adv = adv / (r.std(dim=1, keepdim=True) + TRL_STD_EPS)
    elif scale_rewards == "batch":
        std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        adv = adv / (std + TRL_STD_EPS)
    return adv.reshape(rewards.shape)


def optimal_baseline(
    rewards: Tensor,
    weights: Tensor,
    group_size: int,
    *,
    leave_one_out: bool = True,
    eps: float = 1e-12,
) -> Tensor:
    """Gradient-weighted baseline ``b_ij = Σ_k w_ik r_ik / Σ_k w_ik`` (k ≠ j if leave-one-out).

    Leave-one-out sums are formed with an off-diagonal mask (no ``total − self`` cancellation), so
    one dominant weight does not corrupt the others' baselines. Where the weight sum is ≤ ``eps``
    the plain (leave-one-out) mean is used instead.

    Args:
        rewards: ``[B*G]`` or ``[B, G]`` rewards.
        weights: Non-negative weights of the same shape (e.g. ``||∇ log π(y|x)||²``).
        group_size: G.
        leave_one_out: Exclude the sample itself (unbiased; default) or not (GRPO-like, biased).
        eps: Threshold below which a weight sum counts as zero.

    Returns:
        The baseline, shaped like ``rewards``.
    """
    g = check_positive_int("group_size", group_size)
    check_nonnegative("eps", eps)
    if leave_one_out and g < 2:
        raise ValueError(f"group_size must be >= 2 for a leave-one-out baseline, got {group_size}")
    r = _grouped("rewards", rewards, g).detach()
    check_finite("rewards", r)
    if not isinstance(weights, Tensor) or weights.shape != rewards.shape:
        shape = getattr(weights, "shape", type(weights).__name__)
        raise ValueError(
            f"weights must be a tensor shaped like rewards {tuple(rewards.shape)}, got {shape}"
        )
    check_not_meta("weights", weights)
    check_device("weights", weights, rewards.device, owner="rewards")
    w = _grouped("weights", weights, g).detach().to(r.dtype)
    check_finite("weights", w)
    if (w < 0).any():
        raise ValueError("weights must be >= 0 (they are squared norms)")
    if leave_one_out:
        others = 1.0 - torch.eye(g, dtype=r.dtype, device=r.device)  # [G(j), G(k)]
        w_sum = w @ others  # Σ_{k≠j} w_k (others is symmetric)
        wr_sum = (w * r) @ others
        fallback = (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    else:
        w_sum = w.sum(dim=1, keepdim=True).expand_as(w)
        wr_sum = (w * r).sum(dim=1, keepdim=True).expand_as(w)
        fallback = r.mean(dim=1, keepdim=True).expand_as(r)
    ok = w_sum > eps
    b = torch.where(ok, wr_sum / torch.where(ok, w_sum, torch.ones_like(w_sum)), fallback)
    return b.reshape(rewards.shape)


def _as_grouped_weights(weights: object, rewards: Tensor, grouped: Tensor) -> Tensor:
    """``weights`` reshaped like the grouped rewards, after its shape is checked."""
    if not isinstance(weights, Tensor) or weights.shape != rewards.shape:
        shape = getattr(weights, "shape", type(weights).__name__)
        raise ValueError(
            f"weights must be a tensor shaped like rewards {tuple(rewards.shape)}, got {shape}"
        )
    return weights.reshape(grouped.shape)


def _grouped(name: str, x: Tensor, g: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_not_meta(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() == 1:
        if x.numel() == 0 or x.numel() % g:
            raise ValueError(
                f"{name} has {x.numel()} entries, not a positive multiple of group_size={g} "
                "(expected [B*G] with groups contiguous, or [B, G])"
            )
        return x.view(-1, g)
    if x.dim() == 2:
        if x.shape[1] != g or x.shape[0] == 0:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, expected [B, {g}] (group_size={g})"
            )
        return x
    raise ValueError(f"{name} must be 1-D [B*G] or 2-D [B, G], got shape {tuple(x.shape)}")
