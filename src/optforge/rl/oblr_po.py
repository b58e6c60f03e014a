r"""OBLR-PO: optimal (gradient-weighted) baselines and an SNR learning rate for policy gradients.

Paper: Zixun Huang, Jiayi Sheng, Zeyu Zheng, "OBLR-PO: A Theoretical Framework for Stable
Reinforcement Learning", arXiv:2511.23310 (2025). No official code exists and only the abstract
was available; what follows is the reconstruction of ``specs/oblr_po.md`` (score-function
estimator, optimal-baseline theory, smooth-optimisation step size). Where the paper's choices are
unknown, the option is exposed and the default is named below.

**Estimator.** For B prompts with G responses each (``N = B·G``, groups contiguous), rewards
:math:`r_{ij}`, scores :math:`s_{ij} = \nabla_\theta \log\pi_\theta(y_{ij}\mid x_i)` and
per-sample loss weights :math:`c_{ij}` (1 for the sequence-sum loss, see ``loss_type``),

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

**SNR learning rate.** From the smoothness bound
:math:`\mathbb E[-J(\theta')] \le -J - \eta\lVert\nabla J\rVert^2
+ \tfrac{L\eta^2}{2}(\lVert\nabla J\rVert^2 + \sigma_N^2)`, the best step is

.. math::

    \eta^* = \frac1L\,\frac{\mathrm{SNR}}{1+\mathrm{SNR}}
    = \frac1L\,\frac{\lVert\mathbb E\hat g\rVert^2}{\mathbb E\lVert\hat g\rVert^2},
    \qquad \mathrm{SNR} = \lVert\nabla J\rVert^2/\sigma_N^2 .

:class:`SNRLearningRate` estimates signal :math:`\max(\lVert\bar g\rVert^2 - S/N, 0)` and noise
:math:`S/N` from per-sample (or per-micro-batch) squared norms,
:math:`S = (\sum_i\lVert g_i\rVert^2 - N\lVert\bar g\rVert^2)/(N-1)`, EMA-smooths both
(``beta=0.9``) and writes :math:`\mathrm{lr} = \mathrm{lr_{max}}\cdot\rho`,
:math:`\rho = \mathrm{clip}(m_{sig}/m_{tot}, \rho_{min}, \rho_{max})` into every param group. It
composes with any ``torch.optim`` optimizer (with Adam it scales Adam's lr — our choice; the paper
does not say). ``update_from_gradient`` is a third estimator for when no per-sample information
exists (TRL): EMAs over steps of :math:`\hat g` and :math:`\lVert\hat g\rVert^2` with an exact
small-sample correction.

**Per-sample squared score norms** (:func:`score_sqnorms`): ``exact`` (one backward per sample,
the reference), ``ghost`` (one backward; exact for ``nn.Linear``, ``nn.Embedding``,
``nn.LayerNorm`` and RMSNorm-style modules through T×T Gram matrices — every parameter of a Llama or
of :class:`~optforge.rl.TinyCausalLM`), ``head`` (ghost norm of the LM head only), ``logit``
(forward-only proxy :math:`\sum_t\lVert\mathrm{softmax}-\mathrm{onehot}\rVert^2/\tau^2`),
``length`` (OPO's proxy) and ``uniform``.

Choices where the spec says NOT FOUND: no std normalisation by default (the theory is for
unnormalised advantages); no PPO clipping or KL (one on-policy step per batch, ratio ≡ 1, so the
clipped objective's gradient equals the plain one); ``rho_min=0.05`` floor, ``beta=0.9``, first
ρ = ``rho_max``; an update is skipped (ρ kept) when the batch gradient is exactly zero (all groups
with equal rewards), which otherwise freezes the lr at 0 (spec §8); the optimal baseline uses the
loss-consistent weights :math:`c^2\lVert s\rVert^2`.

Example::

    from optforge.rl import OBLRPOTrainer, SNRLearningRate, TinyCausalLM

    policy = TinyCausalLM(vocab_size=10, max_len=16)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    trainer = OBLRPOTrainer(policy, reward_fn, opt, group_size=8, baseline="optimal",
                            norm_method="ghost", snr_lr=SNRLearningRate(opt),
                            max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    metrics = trainer.step(prompt_ids)        # sample → reward → advantages → update
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import (
    check_finite,
    check_in_range,
    check_positive,
    check_positive_int,
    make_generator,
    require,
)

Baseline = Literal["none", "batch_mean", "group_mean", "rloo", "optimal", "optimal_ingroup"]
ScaleRewards = Literal["none", "group", "batch"]
NormMethod = Literal["exact", "ghost", "head", "logit", "length", "uniform"]
LossType = Literal["seq_sum", "grpo", "bnpo", "dapo", "dr_grpo"]

BASELINES: tuple[str, ...] = (
    "none",
    "batch_mean",
    "group_mean",
    "rloo",
    "optimal",
    "optimal_ingroup",
)
SCALE_REWARDS: tuple[str, ...] = ("none", "group", "batch")
NORM_METHODS: tuple[str, ...] = ("exact", "ghost", "head", "logit", "length", "uniform")
LOSS_TYPES: tuple[str, ...] = ("seq_sum", "grpo", "bnpo", "dapo", "dr_grpo")
_GROUP_BASELINES = ("group_mean", "rloo", "optimal", "optimal_ingroup")
#: TRL's epsilon in ``(r - mean) / (std + 1e-4)``.
TRL_STD_EPS = 1e-4


# ----------------------------------------------------------------------------------------------
# Advantages and baselines
# ----------------------------------------------------------------------------------------------


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
            optimal baselines (see :func:`score_sqnorms`).
        scale_rewards: ``"none"``, ``"group"`` (divide by the group's std + 1e-4, GRPO) or
            ``"batch"`` (by the batch std + 1e-4). Stds are unbiased, as in TRL.
        eps: Weight sums ≤ eps fall back to the (leave-one-out) plain mean.

    Returns:
        Advantages with the shape of ``rewards`` (detached from any graph).

    Raises:
        ValueError: a bad name, ``group_size`` < 2 for a group baseline or group scaling, rewards
            whose length is not a multiple of ``group_size``, non-finite rewards or bad weights.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
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
        if not isinstance(weights, Tensor) or weights.shape != rewards.shape:
            shape = getattr(weights, "shape", type(weights).__name__)
            raise ValueError(
                f"weights must be a tensor shaped like rewards {tuple(rewards.shape)}, got {shape}"
            )
        b = optimal_baseline(
            r, weights.reshape(r.shape), g, leave_one_out=baseline == "optimal", eps=eps
        )
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
    if leave_one_out and g < 2:
        raise ValueError(f"group_size must be >= 2 for a leave-one-out baseline, got {group_size}")
    r = _grouped("rewards", rewards, g).detach()
    check_finite("rewards", r)
    if not isinstance(weights, Tensor) or weights.shape != rewards.shape:
        shape = getattr(weights, "shape", type(weights).__name__)
        raise ValueError(
            f"weights must be a tensor shaped like rewards {tuple(rewards.shape)}, got {shape}"
        )
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


def _grouped(name: str, x: Tensor, g: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
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


# ----------------------------------------------------------------------------------------------
# Log-probabilities, loss
# ----------------------------------------------------------------------------------------------


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token ``log π(token_t | tokens_<t)`` aligned with ``input_ids`` (position 0 gets 0).

    Args:
        model: A causal LM: ``model(input_ids=..., attention_mask=...)`` gives logits ``[N, T, V]``
            (a tensor or an object with ``.logits``, e.g. ``AutoModelForCausalLM``).
        input_ids: ``[N, T]`` token ids.
        attention_mask: ``[N, T]`` with 1 for real tokens (optional).
        temperature: Sampling temperature; logits are divided by it.

    Returns:
        ``[N, T]`` float32 (or float64) log-probabilities, differentiable w.r.t. the model.
    """
    check_positive("temperature", temperature)
    logits = _causal_logits(model, input_ids, attention_mask)
    logp = torch.log_softmax(_as_float(logits[:, :-1]) / temperature, dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return F.pad(picked, (1, 0))


def loss_coefficients(
    response_mask: Tensor,
    loss_type: LossType = "seq_sum",
    *,
    max_completion_length: int | None = None,
) -> Tensor:
    """Per-sample factors ``c_i`` such that each loss is ``-(1/N) Σ_i c_i A_i Σ_t log π_it``.

    ``seq_sum``: 1 (the estimator of the theory); ``grpo``: ``1/L_i`` (per-sequence mean);
    ``bnpo``/``dapo``: ``N / Σ_i L_i`` (token mean over the local batch); ``dr_grpo``:
    ``1 / max_completion_length`` (a constant; default: the mask's width).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    lengths = response_mask.to(torch.float32).sum(dim=1)
    n = lengths.numel()
    if loss_type == "seq_sum":
        return torch.ones_like(lengths)
    if loss_type == "grpo":
        return 1.0 / lengths.clamp(min=1.0)
    if loss_type in ("bnpo", "dapo"):
        return torch.full_like(lengths, n / max(float(lengths.sum()), 1.0))
    width = response_mask.shape[1] if max_completion_length is None else max_completion_length
    check_positive_int("max_completion_length", width)
    return torch.full_like(lengths, 1.0 / width)


def policy_gradient_loss(
    logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    loss_type: LossType = "seq_sum",
    max_completion_length: int | None = None,
) -> Tensor:
    """On-policy policy-gradient loss ``-(1/N) Σ_i c_i A_i Σ_t m_it log π_it`` (TRL aggregations).

    With one on-policy step (TRL's ``num_iterations=1``) the importance ratio is 1 and PPO's
    clipping is inactive, so this has the same gradient as TRL's clipped loss for the same
    ``loss_type``. Like TRL's, its value is ≈ 0 when advantages are centred; the gradient is not.

    Args:
        logprobs: ``[N, T]`` per-token log-probs (from :func:`token_logprobs`).
        advantages: ``[N]`` advantages (detached).
        response_mask: ``[N, T]``, 1 on response tokens.
        loss_type: ``"seq_sum"`` (default), ``"grpo"``, ``"bnpo"``, ``"dapo"`` or ``"dr_grpo"``.
        max_completion_length: The constant of ``dr_grpo`` (default: ``T``).

    Returns:
        A scalar loss.
    """
    _check_response_mask(response_mask, logprobs.shape)
    if advantages.shape != (logprobs.shape[0],):
        raise ValueError(
            f"advantages must have shape [{logprobs.shape[0]}], got {tuple(advantages.shape)}"
        )
    check_finite("advantages", advantages)
    mask = response_mask.to(logprobs.dtype)
    coef = loss_coefficients(response_mask, loss_type, max_completion_length=max_completion_length)
    seq = (logprobs * mask).sum(dim=1)
    return -(coef.to(seq.dtype) * advantages.detach().to(seq.dtype) * seq).mean()


# ----------------------------------------------------------------------------------------------
# Per-sample squared score norms
# ----------------------------------------------------------------------------------------------


def score_sqnorms(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    response_mask: Tensor,
    *,
    method: NormMethod = "ghost",
    temperature: float = 1.0,
) -> Tensor:
    """Per-sample ``w_i = ||∇_θ Σ_t m_it log π(y_it | ·)||²`` (or a proxy), shape ``[N]``.

    Args:
        model: A causal LM (see :func:`token_logprobs`).
        input_ids: ``[N, T]`` prompt + response ids.
        attention_mask: ``[N, T]`` or ``None``.
        response_mask: ``[N, T]``, 1 on response tokens (position 0 cannot be one).
        method: ``"exact"`` (one backward per sample), ``"ghost"`` (one backward, exact for
            Linear/Embedding/LayerNorm/RMSNorm parameters, errors if any other trainable
            parameter exists), ``"head"`` (LM head only), ``"logit"`` (forward-only proxy),
            ``"length"`` (response length) or ``"uniform"`` (ones).
        temperature: Logit temperature of the policy.

    Returns:
        ``[N]`` non-negative float tensor (detached). Parameter ``.grad`` is left untouched.
    """
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {NORM_METHODS}, got {method!r}")
    _check_batch(input_ids, attention_mask, response_mask)
    n = input_ids.shape[0]
    if method == "uniform":
        return torch.ones(n, device=input_ids.device)
    if method == "length":
        return response_mask.to(torch.float32).sum(dim=1)
    if method == "logit":
        with torch.no_grad():
            logits = (
                _as_float(_causal_logits(model, input_ids, attention_mask)[:, :-1]) / temperature
            )
            probs = torch.softmax(logits, dim=-1)
            p_y = probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            per_tok = (1.0 - 2.0 * p_y + probs.pow(2).sum(-1)) / temperature**2
            return (per_tok * response_mask[:, 1:].to(per_tok.dtype)).sum(dim=1)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if method == "exact":
        with torch.enable_grad():
            seq = _seq_logprobs(model, input_ids, attention_mask, response_mask, temperature)
            out = torch.zeros(n, dtype=torch.float64, device=input_ids.device)
            for i in range(n):
                grads = torch.autograd.grad(
                    seq[i], params, retain_graph=i < n - 1, allow_unused=True
                )
                out[i] = sum(g.double().pow(2).sum() for g in grads if g is not None)
        return out.to(torch.float32)
    if method == "head":
        head = _output_head(model)
        recorder = _GhostRecorder([head], params=None)
    else:
        recorder = _GhostRecorder(list(model.modules()), params=params)
    with torch.enable_grad(), recorder:
        seq = _seq_logprobs(model, input_ids, attention_mask, response_mask, temperature)
    return recorder.sqnorms(seq.sum(), n)


def _seq_logprobs(
    model: nn.Module, ids: Tensor, attn: Tensor | None, resp: Tensor, temperature: float
) -> Tensor:
    tok = token_logprobs(model, ids, attn, temperature=temperature)
    return (tok * resp.to(tok.dtype)).sum(dim=1)


class _GhostRecorder:
    """Forward hooks that keep each supported module's input and output for ghost norms."""

    def __init__(self, modules: list[nn.Module], params: list[nn.Parameter] | None) -> None:
        self.entries: list[tuple[str, nn.Module, list[tuple[Tensor, Tensor]]]] = []
        covered: dict[int, str] = {}
        for module in modules:
            kind = _ghost_kind(module)
            if kind is None:
                continue
            for p in module.parameters(recurse=False):
                if id(p) in covered:
                    raise ValueError(
                        "method='ghost' does not support parameters shared between modules (tied "
                        "embeddings); use method='exact'"
                    )
                covered[id(p)] = kind
            self.entries.append((kind, module, []))
        if params is not None:
            missing = [p for p in params if id(p) not in covered]
            if missing:
                raise ValueError(
                    f"method='ghost' covers nn.Linear, nn.Embedding, nn.LayerNorm and RMSNorm "
                    f"modules only; {len(missing)} trainable parameter(s) (shapes "
                    f"{[tuple(p.shape) for p in missing[:4]]}) are outside them: use "
                    "method='exact' or freeze them"
                )
        self.handles: list[Any] = []

    def __enter__(self) -> _GhostRecorder:
        for _, module, store in self.entries:
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                self.handles.append(module.register_forward_hook(_store_hook(store)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def sqnorms(self, total: Tensor, n: int, *, retain_graph: bool = False) -> Tensor:
        calls = [(kind, m, x, y) for kind, m, store in self.entries for x, y in store]
        if not calls:
            raise ValueError(
                "no supported module with trainable parameters ran in the forward pass"
            )
        outs = [y for *_, y in calls]
        deltas = torch.autograd.grad(total, outs, allow_unused=True, retain_graph=retain_graph)
        acc = torch.zeros(n, dtype=torch.float64, device=total.device)
        # a module called several times: its per-sample grad is the sum over calls (concat in time)
        grouped: dict[int, tuple[str, nn.Module, list[Tensor], list[Tensor]]] = {}
        for (kind, module, x, y), d in zip(calls, deltas, strict=True):
            if d is None:
                d = torch.zeros_like(y)
            entry = grouped.setdefault(id(module), (kind, module, [], []))
            entry[2].append(_per_sample(x, n, kind))
            entry[3].append(_per_sample(d, n, "output"))
        for kind, module, xs, ds in grouped.values():
            x, d = torch.cat(xs, dim=1), torch.cat(ds, dim=1)
            acc += _module_sqnorm(kind, module, x, d).double()
        for *_, store in self.entries:
            store.clear()
        return acc.to(torch.float32)


def _store_hook(store: list[tuple[Tensor, Tensor]]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        store.append((inputs[0].detach(), output))

    return hook


def _ghost_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if "RMSNorm" in type(module).__name__ and isinstance(getattr(module, "weight", None), Tensor):
        return "rmsnorm"
    return None


def _per_sample(x: Tensor, n: int, kind: str) -> Tensor:
    """Reshape to ``[N, T, d]`` (``[N, T]`` for embedding ids), checking the batch dimension."""
    if x.dim() < 2 or x.shape[0] != n:
        raise ValueError(
            f"method='ghost' needs batch-first activations; a module saw shape {tuple(x.shape)} "
            f"for a batch of {n}"
        )
    return x.reshape(n, -1) if kind == "embedding" else x.reshape(n, -1, x.shape[-1])


def _module_sqnorm(kind: str, module: nn.Module, x: Tensor, d: Tensor) -> Tensor:
    """Per-sample squared norm of a module's parameter gradient from inputs x, output grads d."""
    if kind == "embedding":
        ids = x
        pad = getattr(module, "padding_idx", None)
        if pad is not None:
            d = d * (ids != pad).unsqueeze(-1)
        same = (ids[:, :, None] == ids[:, None, :]).to(d.dtype)
        return (same * (d @ d.transpose(1, 2))).sum(dim=(1, 2))
    x, d = _as_float(x), _as_float(d)
    out = torch.zeros(x.shape[0], dtype=d.dtype, device=x.device)
    if kind == "linear":
        if module.weight.requires_grad:
            t, d_in, d_out = x.shape[1], x.shape[2], d.shape[2]
            if t * t * (d_in + d_out) < t * d_in * d_out:  # ghost: two T×T Gram matrices
                out += ((x @ x.transpose(1, 2)) * (d @ d.transpose(1, 2))).sum(dim=(1, 2))
            else:  # materialise the per-sample weight gradient (cheaper for short sequences)
                out += torch.einsum("nto,nti->noi", d, x).pow(2).sum(dim=(1, 2))
        if module.bias is not None and module.bias.requires_grad:
            out += d.sum(dim=1).pow(2).sum(dim=1)
        return out
    if kind == "layernorm":
        xhat = F.layer_norm(x, x.shape[-1:], eps=module.eps)
    else:  # rmsnorm
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        eps = torch.finfo(torch.float32).eps if eps is None else eps
        xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if getattr(module, "weight", None) is not None and module.weight.requires_grad:
        out += (d * xhat).sum(dim=1).pow(2).sum(dim=1)
    bias = getattr(module, "bias", None)
    if isinstance(bias, Tensor) and bias.requires_grad:
        out += d.sum(dim=1).pow(2).sum(dim=1)
    return out


def _output_head(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Linear):
        raise ValueError("method='head' needs model.get_output_embeddings() to return an nn.Linear")
    return head


# ----------------------------------------------------------------------------------------------
# SNR learning-rate controller
# ----------------------------------------------------------------------------------------------


class SNRLearningRate:
    """Scale every param group's lr by ρ = SNR/(1+SNR) estimated from the current batch.

    Use it like an LR scheduler: after ``loss.backward()`` call one ``update_*`` method (it reads
    the batch gradient ``ḡ`` from ``.grad``), then :meth:`step` (writes ``lr_max·ρ``), then
    ``optimizer.step()``.

    Args:
        optimizer: Any ``torch.optim`` optimizer.
        lr_max: The lr at ρ = 1 (the ``1/L`` of the theory). ``None``: each group's lr at
            construction.
        beta: EMA factor for the signal and total estimates (0 = no smoothing).
        rho_min: Floor on ρ, in (0, 1] (keeps the lr from freezing once rewards saturate).
        rho_max: Cap on ρ, in [rho_min, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_max: float | None = None,
        *,
        beta: float = 0.9,
        rho_min: float = 0.05,
        rho_max: float = 1.0,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if lr_max is not None:
            check_positive("lr_max", lr_max)
        check_in_range("beta", beta, 0.0, 1.0, high_inclusive=False)
        check_in_range("rho_min", rho_min, 0.0, 1.0, low_inclusive=False)
        check_in_range("rho_max", rho_max, rho_min, 1.0)
        self.optimizer = optimizer
        self.beta, self.rho_min, self.rho_max = float(beta), float(rho_min), float(rho_max)
        self.base_lrs = [
            float(lr_max if lr_max is not None else g["lr"]) for g in optimizer.param_groups
        ]
        for lr in self.base_lrs:
            check_positive("lr_max", lr)
        self.m_signal = 0.0
        self.m_total = 0.0
        self.num_updates = 0
        self.num_skipped = 0
        self.last_rho = self.rho_max
        self.last_signal = math.nan
        self.last_noise = math.nan
        self._grad_ema: list[Tensor] | None = None
        self._sq_ema = 0.0
        self._grad_updates = 0

    # -- estimators -----------------------------------------------------------------------------
    def update_from_per_sample(
        self, sum_sq_per_sample: float | Tensor, n: int, *, mean_grad_sqnorm: float | None = None
    ) -> float:
        """Update from ``Σ_i ||g_i||²`` of the N per-sample terms whose mean is ``ḡ`` (= ``.grad``).

        For the loss ``-(1/N) Σ c_i A_i log π_i`` the per-sample terms are ``g_i = -c_i A_i s_i``,
        so ``Σ_i ||g_i||² = Σ_i c_i² A_i² ||s_i||²`` — free once ``||s_i||²`` is known exactly.

        Args:
            sum_sq_per_sample: ``Σ_i ||g_i||²``.
            n: Number of per-sample terms (≥ 2).
            mean_grad_sqnorm: ``||ḡ||²``; default: read from the optimizer's ``.grad``.

        Returns:
            The new ρ.
        """
        return self.update_from_microbatches_sum(float(sum_sq_per_sample), n, mean_grad_sqnorm)

    def update_from_microbatches(
        self, microbatch_grad_sqnorms: Sequence[float], mean_grad_sqnorm: float | None = None
    ) -> float:
        """Update from ``||g_k||²`` of K ≥ 2 micro-batch gradients whose mean is ``ḡ``.

        Args:
            microbatch_grad_sqnorms: ``[||g_1||², ..., ||g_K||²]``.
            mean_grad_sqnorm: ``||ḡ||²``; default: read from ``.grad``.

        Returns:
            The new ρ.
        """
        values = [float(v) for v in microbatch_grad_sqnorms]
        return self.update_from_microbatches_sum(sum(values), len(values), mean_grad_sqnorm)

    def update_from_microbatches_sum(
        self, sum_sq: float, k: int, mean_grad_sqnorm: float | None = None
    ) -> float:
        """Core estimator: ``S = (Σ_k ||g_k||² − K ||ḡ||²)/(K − 1)``, noise ``S/K``.

        The signal is ``||ḡ||² − S/K`` (clamped at 0); ``sum_sq`` is ``Σ_k ||g_k||²``.
        """
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"need at least 2 per-sample/micro-batch terms, got {k!r}")
        if not math.isfinite(sum_sq) or sum_sq < 0:
            raise ValueError(f"sum of squared norms must be finite and >= 0, got {sum_sq!r}")
        gbar2 = self.grad_sqnorm() if mean_grad_sqnorm is None else float(mean_grad_sqnorm)
        if not math.isfinite(gbar2):
            raise FloatingPointError(f"non-finite gradient norm² {gbar2} in the SNR estimate")
        noise = max((sum_sq - k * gbar2) / (k - 1), 0.0) / k
        signal = max(gbar2 - noise, 0.0)
        return self._update(signal, noise, skip=gbar2 == 0.0)

    def update_from_gradient(self) -> float:
        """Update from the current ``.grad`` alone, with EMAs over steps (no per-sample data).

        Keeps ``m = EMA(ḡ)`` and ``v = EMA(||ḡ||²)`` (bias-corrected). For i.i.d. batch
        gradients with mean μ and noise σ², ``E||m||² = ||μ||² + σ² Σw²`` and ``E v = ||μ||² + σ²``
        (``Σw²`` the sum of the squared EMA weights), so ``σ² ≈ (v − ||m||²)/(1 − Σw²)``. Lagged
        by ~1/(1−β) steps; costs one parameter-sized buffer.

        Returns:
            The new ρ (unchanged on the first call, which has no spread to measure).
        """
        grads = [
            p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self._params()
        ]
        b = self.beta if self.beta > 0 else 0.5
        if self._grad_ema is None:
            self._grad_ema = [torch.zeros_like(g, dtype=torch.float32) for g in grads]
        sq = sum(float(g.double().pow(2).sum()) for g in grads)
        if not math.isfinite(sq):
            raise FloatingPointError("non-finite gradient in the SNR estimate")
        for m, g in zip(self._grad_ema, grads, strict=True):
            m.mul_(b).add_(g.float(), alpha=1 - b)
        self._sq_ema = b * self._sq_ema + (1 - b) * sq
        self._grad_updates += 1
        t = self._grad_updates
        corr = 1 - b**t
        v = self._sq_ema / corr
        m2 = sum(float(m.double().pow(2).sum()) for m in self._grad_ema) / corr**2
        sum_w2 = (1 - b) * (1 + b**t) / ((1 + b) * corr)
        if t < 2 or v <= 0:
            return self.last_rho
        noise = max(v - m2, 0.0) / (1 - sum_w2)
        signal = max(v - noise, 0.0)
        rho = min(max(signal / v, self.rho_min), self.rho_max)
        self.last_rho, self.last_signal, self.last_noise = rho, signal, noise
        self.num_updates += 1
        return rho

    def _update(self, signal: float, noise: float, *, skip: bool) -> float:
        if skip or signal + noise <= 0.0:
            self.num_skipped += 1
            return self.last_rho
        b = self.beta
        self.m_signal = b * self.m_signal + (1 - b) * signal
        self.m_total = b * self.m_total + (1 - b) * (signal + noise)
        self.num_updates += 1
        self.last_signal, self.last_noise = signal, noise
        self.last_rho = min(max(self.m_signal / self.m_total, self.rho_min), self.rho_max)
        return self.last_rho

    # -- scheduler interface --------------------------------------------------------------------
    def step(self) -> None:
        """Write ``lr_max·ρ`` into every param group."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.last_rho

    def get_last_lr(self) -> list[float]:
        """The lr of every param group after the last :meth:`step`."""
        return [base * self.last_rho for base in self.base_lrs]

    def grad_sqnorm(self) -> float:
        """``||ḡ||²`` over the optimizer's parameters (from ``.grad``), in float64."""
        return float(
            sum(p.grad.double().pow(2).sum() for p in self._params() if p.grad is not None)
        )

    def _params(self) -> Iterable[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (EMA state, ρ, counters, base lrs)."""
        return {
            "base_lrs": list(self.base_lrs),
            "beta": self.beta,
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "m_signal": self.m_signal,
            "m_total": self.m_total,
            "num_updates": self.num_updates,
            "num_skipped": self.num_skipped,
            "last_rho": self.last_rho,
            "last_signal": self.last_signal,
            "last_noise": self.last_noise,
            "grad_ema": None if self._grad_ema is None else [m.clone() for m in self._grad_ema],
            "sq_ema": self._sq_ema,
            "grad_updates": self._grad_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        sd = dict(state_dict)
        self.base_lrs = [float(v) for v in sd["base_lrs"]]
        self.beta, self.rho_min, self.rho_max = sd["beta"], sd["rho_min"], sd["rho_max"]
        self.m_signal, self.m_total = sd["m_signal"], sd["m_total"]
        self.num_updates, self.num_skipped = sd["num_updates"], sd["num_skipped"]
        self.last_rho, self.last_signal, self.last_noise = (
            sd["last_rho"],
            sd["last_signal"],
            sd["last_noise"],
        )
        ema = sd["grad_ema"]
        self._grad_ema = None if ema is None else [m.clone() for m in ema]
        self._sq_ema, self._grad_updates = sd["sq_ema"], sd["grad_updates"]


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------

RewardFn = Callable[[Tensor, Tensor], Tensor]


class OBLRPOTrainer:
    """Compact on-policy trainer: sample G responses per prompt, score, advantages, one update.

    Works with any causal LM in the Hugging Face convention (``AutoModelForCausalLM`` built from a
    config, or :class:`~optforge.rl.TinyCausalLM`). Sampling is plain ancestral sampling with the
    trainer's own ``torch.Generator`` (no KV cache; meant for short responses), under
    ``torch.no_grad()``; log-probs are then recomputed with grad under the same parameters.

    Args:
        model: The policy.
        reward_fn: ``reward_fn(prompt_ids [N, P], response_ids [N, R]) -> [N]`` float rewards
            (prompts repeated G times, groups contiguous; response tokens after EOS are
            ``pad_token_id``).
        optimizer: Any ``torch.optim`` optimizer over the policy's parameters.
        group_size: G (TRL's ``num_generations``), ≥ 2.
        baseline: See :func:`advantages` (default ``"optimal"``; GRPO is ``"group_mean"`` with
            ``scale_rewards="group"``, RLOO ``"rloo"``, REINFORCE ``"batch_mean"``).
        norm_method: Weights for the optimal baseline / SNR (see :func:`score_sqnorms`).
        scale_rewards: TRL's ``"none"`` / ``"group"`` / ``"batch"``.
        loss_type: ``"seq_sum"`` / ``"grpo"`` / ``"bnpo"`` / ``"dapo"`` / ``"dr_grpo"``.
        snr_lr: An :class:`SNRLearningRate` on ``optimizer`` (``None``: fixed lr). With exact or
            ghost norms it uses the per-sample estimate; otherwise the batch is split by prompt
            into ``snr_microbatches`` micro-batches.
        snr_microbatches: K for the micro-batch estimate (default: one per prompt, at most 8).
        max_new_tokens: Response length limit.
        temperature: Sampling temperature.
        eos_token_id: Stops a response (kept in it); later positions are padding.
        pad_token_id: Padding id after EOS (default: ``eos_token_id`` or 0).
        max_grad_norm: Optional global-norm clipping before the optimizer step.
        generator: Sampling generator (default: seeded from ``torch.initial_seed()``).
    """

    def __init__(
        self,
        model: nn.Module,
        reward_fn: RewardFn,
        optimizer: torch.optim.Optimizer,
        *,
        group_size: int = 8,
        baseline: Baseline = "optimal",
        norm_method: NormMethod = "ghost",
        scale_rewards: ScaleRewards = "none",
        loss_type: LossType = "seq_sum",
        snr_lr: SNRLearningRate | None = None,
        snr_microbatches: int | None = None,
        max_new_tokens: int,
        temperature: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        max_grad_norm: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(reward_fn):
            raise TypeError("reward_fn must be callable (prompt_ids, response_ids) -> [N] rewards")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if check_positive_int("group_size", group_size) < 2:
            raise ValueError(f"group_size must be >= 2, got {group_size}")
        for name, value, allowed in [
            ("baseline", baseline, BASELINES),
            ("norm_method", norm_method, NORM_METHODS),
            ("scale_rewards", scale_rewards, SCALE_REWARDS),
            ("loss_type", loss_type, LOSS_TYPES),
        ]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if snr_lr is not None and snr_lr.optimizer is not optimizer:
            raise ValueError("snr_lr must wrap the trainer's optimizer")
        if (
            snr_microbatches is not None
            and check_positive_int("snr_microbatches", snr_microbatches) < 2
        ):
            raise ValueError(f"snr_microbatches must be >= 2, got {snr_microbatches}")
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        self.model, self.reward_fn, self.optimizer = model, reward_fn, optimizer
        self.group_size = int(group_size)
        self.baseline, self.norm_method = baseline, norm_method
        self.scale_rewards, self.loss_type = scale_rewards, loss_type
        self.snr_lr, self.snr_microbatches = snr_lr, snr_microbatches
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        self.temperature = check_positive("temperature", temperature)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id if pad_token_id is not None else (eos_token_id or 0)
        self.max_grad_norm = max_grad_norm
        device = next(model.parameters()).device
        self.generator = generator if generator is not None else make_generator(None, device)
        self.num_steps = 0

    @torch.no_grad()
    def generate(
        self, prompt_ids: Tensor, prompt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample G responses per prompt.

        Args:
            prompt_ids: ``[B, P]`` prompt ids (left-padded if ``prompt_mask`` is given).
            prompt_mask: ``[B, P]`` attention mask of the prompts.

        Returns:
            ``(input_ids [N, P+R], attention_mask, response_mask, sample_logprobs [N, P+R])`` with
            the sampling log-probs aligned like :func:`token_logprobs`.
        """
        if (
            not isinstance(prompt_ids, Tensor)
            or prompt_ids.dim() != 2
            or prompt_ids.is_floating_point()
        ):
            raise ValueError("prompt_ids must be an integer tensor [B, P]")
        ids = prompt_ids.repeat_interleave(self.group_size, dim=0)
        n = ids.shape[0]
        attn = (
            torch.ones_like(ids)
            if prompt_mask is None
            else prompt_mask.to(ids.dtype).repeat_interleave(self.group_size, dim=0)
        )
        resp = torch.zeros_like(ids)
        logps = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        done = torch.zeros(n, dtype=torch.bool, device=ids.device)
        for _ in range(self.max_new_tokens):
            logits = _as_float(_causal_logits(self.model, ids, attn)[:, -1]) / self.temperature
            logp = torch.log_softmax(logits, dim=-1)
            tok = torch.multinomial(logp.exp(), 1, generator=self.generator).squeeze(1)
            live = ~done
            tok = torch.where(live, tok, torch.full_like(tok, self.pad_token_id))
            ids = torch.cat([ids, tok[:, None]], dim=1)
            attn = torch.cat([attn, live[:, None].to(attn.dtype)], dim=1)
            resp = torch.cat([resp, live[:, None].to(resp.dtype)], dim=1)
            step_logp = torch.where(
                live,
                logp.gather(1, tok[:, None]).squeeze(1),
                torch.zeros_like(tok, dtype=logp.dtype),
            )
            logps = torch.cat([logps, step_logp[:, None]], dim=1)
            if self.eos_token_id is not None:
                done = done | (tok == self.eos_token_id)
                if bool(done.all()):
                    break
        return ids, attn, resp, logps

    def step(self, prompt_ids: Tensor, prompt_mask: Tensor | None = None) -> dict[str, float]:
        """One on-policy iteration: sample → reward → advantages → (SNR) → optimizer step.

        Returns:
            Metrics: ``reward_mean``, ``reward_std``, ``frac_reward_zero_std`` (TRL's), ``loss``,
            ``grad_norm``, ``rho``, ``lr``, ``advantage_abs_mean``, ``weight_mean``,
            ``logprob_gap`` (max |sampling − recomputed| log-prob: 0 up to float error on-policy).
        """
        g, p_len = self.group_size, prompt_ids.shape[1]
        ids, attn, resp, sample_logps = self.generate(prompt_ids, prompt_mask)
        n = ids.shape[0]
        rewards = self.reward_fn(ids[:, :p_len], ids[:, p_len:])
        if not isinstance(rewards, Tensor):
            rewards = torch.as_tensor(rewards, dtype=torch.float32, device=ids.device)
        if rewards.shape != (n,):
            raise ValueError(
                f"reward_fn must return rewards of shape [{n}], got {tuple(rewards.shape)}"
            )
        rewards = check_finite("rewards", rewards.detach().to(torch.float32))
        coef = loss_coefficients(resp, self.loss_type).to(rewards.device)
        exact_norms = self.norm_method in ("exact", "ghost")
        per_sample_snr = self.snr_lr is not None and exact_norms
        need_w = self.baseline.startswith("optimal") or per_sample_snr
        fused = need_w and self.norm_method == "ghost" and (self.snr_lr is None or per_sample_snr)
        tok_logps: Tensor | None = None
        if fused:  # ghost norms from the same forward pass as the loss (one forward, two backward)
            _check_batch(ids, attn, resp)
            recorder = _GhostRecorder(
                list(self.model.modules()),
                params=[q for q in self.model.parameters() if q.requires_grad],
            )
            with recorder:
                tok_logps = token_logprobs(self.model, ids, attn, temperature=self.temperature)
            seq = (tok_logps * resp.to(tok_logps.dtype)).sum(dim=1)
            w = recorder.sqnorms(seq.sum(), n, retain_graph=True).to(rewards.device)
        elif need_w:
            w = score_sqnorms(
                self.model, ids, attn, resp, method=self.norm_method, temperature=self.temperature
            ).to(rewards.device)
        else:
            w = torch.ones_like(rewards)
        adv = advantages(
            rewards,
            g,
            baseline=self.baseline,
            weights=coef.pow(2) * w,
            scale_rewards=self.scale_rewards,
        )
        self.optimizer.zero_grad(set_to_none=True)
        if self.snr_lr is not None and not per_sample_snr:
            loss, tok_logps, mb_sq = self._backward_microbatches(ids, attn, resp, adv, coef)
        else:
            if tok_logps is None:
                tok_logps = token_logprobs(self.model, ids, attn, temperature=self.temperature)
            loss = _loss_from_coef(tok_logps, adv, resp, coef)
            loss.backward()
        loss = loss.detach()
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"non-finite policy-gradient loss at step {self.num_steps}")
        params = [q for group in self.optimizer.param_groups for q in group["params"]]
        grad_sq = float(sum(q.grad.double().pow(2).sum() for q in params if q.grad is not None))
        if not math.isfinite(grad_sq):
            raise FloatingPointError(f"non-finite gradient at step {self.num_steps}")
        if self.snr_lr is not None:
            if per_sample_snr:
                self.snr_lr.update_from_per_sample(float((coef * adv).pow(2).mul(w).sum()), n)
            else:
                self.snr_lr.update_from_microbatches(mb_sq, mean_grad_sqnorm=grad_sq)
            self.snr_lr.step()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.num_steps += 1
        grouped = rewards.view(-1, g)
        mask = resp.bool()
        return {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()) if n > 1 else 0.0,
            "frac_reward_zero_std": float((grouped.std(dim=1) == 0).float().mean()),
            "loss": float(loss),
            "grad_norm": math.sqrt(grad_sq),
            "rho": self.snr_lr.last_rho if self.snr_lr is not None else 1.0,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "advantage_abs_mean": float(adv.abs().mean()),
            "weight_mean": float(w.mean()),
            "logprob_gap": float((tok_logps.detach() - sample_logps).abs()[mask].max()),
        }

    def _backward_microbatches(
        self, ids: Tensor, attn: Tensor, resp: Tensor, adv: Tensor, coef: Tensor
    ) -> tuple[Tensor, Tensor, list[float]]:
        n_prompts = ids.shape[0] // self.group_size
        k = self.snr_microbatches or min(n_prompts, 8)
        if k < 2 or k > n_prompts:
            raise ValueError(
                f"snr_microbatches={k} needs 2 <= K <= number of prompts ({n_prompts})"
            )
        params = [q for group in self.optimizer.param_groups for q in group["params"]]
        chunks = torch.arange(n_prompts, device=ids.device).tensor_split(k)
        sq, losses, logps = [], [], []
        prev = [torch.zeros_like(q) for q in params]
        for chunk in chunks:
            rows = (
                chunk[:, None] * self.group_size + torch.arange(self.group_size, device=ids.device)
            ).reshape(-1)
            tok = token_logprobs(self.model, ids[rows], attn[rows], temperature=self.temperature)
            # scaled so the chunk losses sum to the full-batch loss
            part = (
                _loss_from_coef(tok, adv[rows], resp[rows], coef[rows])
                * rows.numel()
                / ids.shape[0]
            )
            part.backward()
            now = [
                q.grad.detach().clone() if q.grad is not None else torch.zeros_like(q)
                for q in params
            ]
            delta2 = sum(
                float((a - b).double().pow(2).sum()) for a, b in zip(now, prev, strict=True)
            )
            sq.append(k * k * delta2)  # g_k = K·Δ_k so that ḡ = mean_k g_k
            prev = now
            losses.append(part.detach())
            logps.append((rows, tok.detach()))
        full = torch.zeros(ids.shape, dtype=logps[0][1].dtype, device=ids.device)
        for rows, tok in logps:
            full[rows] = tok
        return torch.stack(losses).sum(), full, sq


def _loss_from_coef(tok_logps: Tensor, adv: Tensor, resp: Tensor, coef: Tensor) -> Tensor:
    seq = (tok_logps * resp.to(tok_logps.dtype)).sum(dim=1)
    return -(coef.to(seq.dtype) * adv.to(seq.dtype) * seq).mean()


# ----------------------------------------------------------------------------------------------
# TRL adapter
# ----------------------------------------------------------------------------------------------


def make_oblr_grpo_trainer_class(base: type | None = None) -> type:
    """A ``trl.GRPOTrainer`` subclass whose advantages use :func:`advantages`' baselines.

    The subclass takes three extra keyword arguments: ``baseline`` (default ``"optimal"``),
    ``norm_method`` (``"length"``, ``"logit"`` or ``"uniform"``; proxies, because TRL computes
    advantages before the loss pass) and ``snr_lr`` (``True`` to scale the lr by
    :meth:`SNRLearningRate.update_from_gradient` at every optimizer step, composing with TRL's own
    scheduler; or a dict of :class:`SNRLearningRate` keyword arguments). ``scale_rewards`` and the
    reward functions keep TRL's meaning. Single-process, ``sum_then_normalize`` aggregation and
    scorable completions only.

    Args:
        base: The class to extend (default ``trl.GRPOTrainer``).

    Returns:
        The subclass ``OBLRGRPOTrainer``.
    """
    if base is None:
        base = require("trl", "llm").GRPOTrainer
    transformers = require("transformers", "llm")

    class SNRCallback(transformers.TrainerCallback):
        """Multiplies the lr by ρ just before each optimizer step and restores it after."""

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.controller: SNRLearningRate | None = None
            self._saved: list[float] = []

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            inner = getattr(opt, "optimizer", opt)  # accelerate wraps the optimizer
            if self.controller is None:
                self.controller = SNRLearningRate(inner, **self.kwargs)
            rho = self.controller.update_from_gradient()
            self._saved = [g["lr"] for g in inner.param_groups]
            for group in inner.param_groups:
                group["lr"] = group["lr"] * rho

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            inner = getattr(opt, "optimizer", opt)
            for group, lr in zip(inner.param_groups, self._saved, strict=False):
                group["lr"] = lr

    class OBLRGRPOTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            *args: Any,
            baseline: Baseline = "optimal",
            norm_method: Literal["length", "logit", "uniform"] = "length",
            snr_lr: bool | dict[str, Any] = False,
            **kwargs: Any,
        ) -> None:
            if baseline not in BASELINES:
                raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
            if norm_method not in ("length", "logit", "uniform"):
                raise ValueError(
                    f"norm_method must be 'length', 'logit' or 'uniform', got {norm_method!r}"
                )
            super().__init__(*args, **kwargs)
            self.oblr_baseline, self.oblr_norm_method = baseline, norm_method
            self.snr_callback = None
            if snr_lr:
                self.snr_callback = SNRCallback(**(snr_lr if isinstance(snr_lr, dict) else {}))
                self.add_callback(self.snr_callback)

        def _calculate_rewards(
            self, inputs: Any, prompts: Any, completions: Any, ids: Any
        ) -> Tensor:
            out = super()._calculate_rewards(inputs, prompts, completions, ids)
            self._oblr_rewards_per_func = out
            return out

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            if self.accelerator.num_processes != 1:
                raise NotImplementedError("OBLRGRPOTrainer supports a single process")
            per_func = self._oblr_rewards_per_func
            if torch.isnan(per_func).all(dim=1).any():
                raise ValueError(
                    "OBLRGRPOTrainer: some completions were unscorable (all rewards None)"
                )
            weights = self.reward_weights.to(per_func.device)
            rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
            mask = out["completion_mask"]
            if self.oblr_norm_method == "length":
                w = mask.to(torch.float32).sum(dim=1)
            elif self.oblr_norm_method == "uniform":
                w = torch.ones_like(rewards)
            else:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                attn = torch.cat([out["prompt_mask"], mask], dim=1)
                resp = torch.cat([torch.zeros_like(out["prompt_mask"]), mask], dim=1)
                w = score_sqnorms(
                    self.model, ids, attn, resp, method="logit", temperature=self.temperature
                )
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            adv = advantages(
                rewards.float(),
                g,
                baseline=self.oblr_baseline,
                weights=w.to(rewards.device).float(),
                scale_rewards=self.scale_rewards,
            )
            out["advantages"] = adv.to(out["advantages"].dtype)
            return out

    OBLRGRPOTrainer.SNRCallback = SNRCallback  # type: ignore[attr-defined]
    return OBLRGRPOTrainer


# ----------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------


def _causal_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"model must be a causal language model whose output has .logits (e.g. "
            f"AutoModelForCausalLM); {type(model).__name__} returned {type(out).__name__} without "
            "logits (a base model without an LM head?)"
        )
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"model logits must have shape [N, T, V] matching input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(logits.shape)}"
        )
    return logits


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_response_mask(response_mask: Tensor, shape: torch.Size | tuple[int, ...]) -> None:
    if not isinstance(response_mask, Tensor) or tuple(response_mask.shape) != tuple(shape):
        got = getattr(response_mask, "shape", type(response_mask).__name__)
        raise ValueError(f"response_mask must have shape {tuple(shape)}, got {got}")
    if bool(response_mask[:, 0].any()):
        raise ValueError(
            "response_mask[:, 0] must be 0: the first token has no context to score it"
        )
    rows = response_mask.sum(dim=1)
    if bool((rows == 0).any()):
        raise ValueError(
            f"response_mask has {int((rows == 0).sum())} row(s) with no response token "
            "(every sample needs at least one)"
        )


def _check_batch(input_ids: Tensor, attention_mask: Tensor | None, response_mask: Tensor) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor [N, T]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have shape {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    _check_response_mask(response_mask, input_ids.shape)
