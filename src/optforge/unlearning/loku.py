"""LoKU: the inverted hinge loss and Fisher-weighted LoRA initialisation (FILA) for unlearning.

Paper: *Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs* (earlier title:
*Towards Robust and Cost-Efficient Knowledge Unlearning for Large Language Models*), Sungmin Cha,
Sungjun Cho, Dasol Hwang, Moontae Lee, ICLR 2025, arXiv:2408.06621. Official code:
``csm9493/efficient-llm-unlearning`` (TOFU part).

**Inverted hinge loss (IHL).** For a forget-set target token ``y`` at position ``t`` with
next-token distribution ``p = softmax(z)``,

.. math::

    \\ell_{IHL} = 1 + p_y - \\max_{v \\ne y} p_v \\in [0, 2],

averaged over the non-masked target tokens. Its gradient w.r.t. the logits is
``p_y (e_y - p) - p_{v*} (e_{v*} - p)`` with ``v* = argmax_{v≠y} p_v``: bounded, concentrated on
the target and the runner-up token, and vanishing as ``p_y → 0`` — unlike gradient ascent
(``-CE``), whose loss is unbounded and whose logit gradient ``p - e_y`` never shrinks.

**FILA.** For each LoRA-adapted weight ``W`` (``d_out × d_in``):

1. empirical Fisher diagonals ``F_f``, ``F_r`` on forget and retain batches
   (``Σ_b n_b (∂CE_b/∂W)² / Σ_b n_b``, ``n_b`` target tokens of batch ``b``; batch gradients
   squared, as in the official code);
2. relative importance ``I = F_f / (F_r + eps)``; row weights ``w_i = sqrt(Σ_j I_ij)``;
3. rank-``r`` SVD ``diag(w) W ≈ U_r S_r V_rᵀ`` (the optimal weighted approximation,
   Eckart–Young); with PEFT's scaling ``s`` (``lora_alpha / r``, or ``/ sqrt(r)`` for rsLoRA)
   and ``S' = S_r / s``: ``A = sqrt(S') V_rᵀ``, ``B = diag(1 / (w + eps)) U_r sqrt(S')``;
4. the frozen base keeps the residual ``W ← W − s B A``, so the model's outputs are unchanged
   at step 0, and only ``A``, ``B`` are trained (with IHL + retain NLL).

Example::

    from peft import LoraConfig, get_peft_model
    from optforge.unlearning import FilaConfig, Unlearner, initialize_fila

    model = get_peft_model(base_lm, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    initialize_fila(model, forget_loader, retain_loader, FilaConfig())
    unlearner = Unlearner(model, forget_loss="ihl", retain_loss="nll", lr=1e-3)
    history = unlearner.fit(forget_loader, retain_loader, epochs=5)

Choices where the spec left room (documented deviations):

* An all-masked batch (no target token) raises ``ValueError`` for ``reduction="mean"`` (the mean
  is undefined and in an unlearning loop it signals a data bug); ``"sum"`` returns 0.
* The Fisher pass runs with the LoRA adapters disabled and the model in eval mode (no dropout),
  so it measures the base model whatever the adapters' current values are.
* The retain KL term averages over the positions with ``attention_mask == 1`` (the official code
  divides by all ``B·T`` positions, padding included).
* Exact SVD (``torch.linalg.svd``) when ``min(d_out, d_in) ≤ 4096``; randomised
  ``torch.svd_lowrank`` above (``svd="auto"``), because ``svd_lowrank(q=r)`` — the official
  choice — is inaccurate for small matrices.
* DoRA adapters are rejected (FILA is defined for plain LoRA).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import check_nonnegative, check_positive, check_positive_int, require

__all__ = [
    "FilaConfig",
    "GradientAscentLoss",
    "InvertedHingeLoss",
    "Unlearner",
    "causal_lm_logits",
    "fila_factors",
    "fila_init_",
    "fisher_diagonal",
    "gradient_ascent_loss",
    "initialize_fila",
    "inverted_hinge_loss",
    "lora_layers",
    "relative_importance",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _shifted(logits: Tensor, labels: Tensor, shift: bool) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("logits and labels must be torch.Tensor")
    if logits.dim() < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must have shape labels.shape + (vocab,); got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if shift:
        if labels.dim() < 1 or labels.shape[-1] < 2:
            raise ValueError("labels: shift=True needs a sequence dimension of length >= 2")
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    return logits, labels


def _reduce(per_token: Tensor, mask: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    count = mask.sum()
    if int(count) == 0:
        raise ValueError(
            f"labels: every position equals ignore_index, so the mean {name} is undefined"
        )
    return total / count


def inverted_hinge_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    margin: float = 1.0,
    shift: bool = True,
) -> Tensor:
    """Inverted hinge loss ``margin + p_y − max_{v≠y} p_v`` per target token.

    Args:
        logits: Next-token logits, shape ``(..., T, V)``.
        labels: Target token ids, shape ``(..., T)``; ``ignore_index`` marks untrained positions.
        ignore_index: Label value that is skipped.
        reduction: ``"mean"`` over non-masked tokens, ``"sum"``, or ``"none"`` (per position,
            0 at masked positions; shape of the (shifted) labels).
        margin: The hinge margin (1 in the paper).
        shift: If True (Hugging Face convention), position ``t`` of ``logits`` predicts
            ``labels[t + 1]``; if False, they are already aligned.

    Returns:
        The reduced loss (a scalar) or the per-position losses.

    Raises:
        ValueError: On mismatched shapes, an unknown reduction, or an all-masked batch with
            ``reduction="mean"``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits, labels = _shifted(logits, labels, shift)
    mask = labels != ignore_index
    dtype = torch.promote_types(logits.dtype, torch.float32)
    per_token = logits.new_zeros(labels.shape, dtype=dtype)
    if bool(mask.any()):
        z = logits[mask].to(per_token.dtype)
        y = labels[mask].long()
        vocab = z.shape[-1]
        if bool(((y < 0) | (y >= vocab)).any()):
            raise ValueError(f"labels: target ids must lie in [0, {vocab}) or equal ignore_index")
        p = z.softmax(-1)
        p_true = p.gather(-1, y[:, None]).squeeze(-1)
        p_other = p.scatter(-1, y[:, None], float("-inf")).amax(-1)
        per_token = per_token.masked_scatter(mask, margin + p_true - p_other)
    return _reduce(per_token, mask, reduction, "inverted hinge loss")


def gradient_ascent_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    shift: bool = True,
) -> Tensor:
    """Gradient-ascent unlearning loss: the *negative* token cross-entropy (to be minimised).

    With ``reduction="mean"`` this equals ``-outputs.loss`` of a Hugging Face causal LM.

    Args:
        logits: Next-token logits, shape ``(..., T, V)``.
        labels: Target ids, shape ``(..., T)``.
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        shift: Shift logits/labels by one position (Hugging Face convention).

    Returns:
        The reduced loss or the per-position losses (0 at masked positions).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits, labels = _shifted(logits, labels, shift)
    mask = labels != ignore_index
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1).long(),
        ignore_index=ignore_index,
        reduction="none",
    ).reshape(labels.shape)
    return _reduce(-ce, mask, reduction, "gradient-ascent loss")


class InvertedHingeLoss(nn.Module):
    """``nn.Module`` form of :func:`inverted_hinge_loss`.

    Args:
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        margin: Hinge margin (1 in the paper).
    """

    def __init__(
        self, ignore_index: int = -100, reduction: Reduction = "mean", margin: float = 1.0
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.margin = float(check_nonnegative("margin", margin))

    def forward(self, logits: Tensor, labels: Tensor, *, shift: bool = True) -> Tensor:
        return inverted_hinge_loss(
            logits,
            labels,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            margin=self.margin,
            shift=shift,
        )


class GradientAscentLoss(nn.Module):
    """``nn.Module`` form of :func:`gradient_ascent_loss` (negative cross-entropy).

    Args:
        ignore_index: Label value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, ignore_index: int = -100, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor, *, shift: bool = True) -> Tensor:
        return gradient_ascent_loss(
            logits, labels, ignore_index=self.ignore_index, reduction=self.reduction, shift=shift
        )


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def _labels_of(batch: Mapping[str, Tensor]) -> Tensor:
    if "labels" in batch:
        return batch["labels"]
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    return labels


def causal_lm_logits(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Logits ``(B, T, V)`` of a causal LM for an HF-style batch dict.

    Works with ``transformers`` models (``.logits`` of the output) and with any module that
    returns the logits tensor itself.

    Args:
        model: The language model.
        batch: A dict with ``input_ids`` and optionally ``attention_mask``.

    Returns:
        The logits tensor.
    """
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError("batch must be a dict with an 'input_ids' entry")
    kwargs = {"input_ids": batch["input_ids"]}
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    out = model(**kwargs)
    return out if isinstance(out, Tensor) else out.logits


def _to(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Fisher information
# --------------------------------------------------------------------------------------------


def fisher_diagonal(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    param_filter: Callable[[str, nn.Parameter], bool] | None = None,
    name: str = "batches",
) -> dict[str, Tensor]:
    """Empirical Fisher diagonal ``Σ_b n_b (∂CE_b/∂θ)² / Σ_b n_b`` (token-count weighted).

    ``CE_b`` is the batch-mean next-token cross-entropy over the ``labels != -100`` positions and
    ``n_b`` their count, as in the official ``measure_importance.py`` (batch gradients are
    squared, not per-example gradients: with batch size 1 it is the per-example Fisher). Selected
    parameters get ``requires_grad`` temporarily; gradients are accumulated in float32.

    Args:
        model: A causal LM (see :func:`causal_lm_logits`).
        batches: HF-style batch dicts (``input_ids``, ``attention_mask``, ``labels``).
        param_filter: ``(name, param) -> bool`` selecting the parameters; default all.
        name: Name of the ``batches`` argument used in error messages.

    Returns:
        Parameter name → Fisher diagonal (float32, same shape and device as the parameter).

    Raises:
        ValueError: If ``batches`` is empty, a batch has no target token, or no parameter is
            selected.
    """
    params = {
        n: p for n, p in model.named_parameters() if param_filter is None or param_filter(n, p)
    }
    if not params:
        raise ValueError("param_filter selects no parameter of the model")
    saved_flags = {n: p.requires_grad for n, p in params.items()}
    saved_grads = {n: p.grad for n, p in params.items()}
    others = [p for n, p in model.named_parameters() if n not in params and p.requires_grad]
    was_training = model.training
    device = _model_device(model)
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    total = 0
    try:
        for p in params.values():
            p.requires_grad_(True)
        for p in others:
            p.requires_grad_(False)
        model.eval()
        for batch in batches:
            batch = _to(batch, device)
            labels = _labels_of(batch)
            n_b = int((labels[..., 1:] != -100).sum())
            if n_b == 0:
                raise ValueError(f"{name}: a batch has no target token (all labels are -100)")
            for p in params.values():
                p.grad = None
            logits = causal_lm_logits(model, batch)
            loss = -gradient_ascent_loss(logits, labels)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    sums[n].add_(g.detach().float().square(), alpha=n_b)
            total += n_b
    finally:
        for n, p in params.items():
            p.requires_grad_(saved_flags[n])
            p.grad = saved_grads[n]
        for p in others:
            p.requires_grad_(True)
        model.train(was_training)
    if total == 0:
        raise ValueError(f"{name} is empty: the Fisher information needs at least one batch")
    return {n: s / total for n, s in sums.items()}


def relative_importance(
    f_forget: Mapping[str, Tensor], f_retain: Mapping[str, Tensor], eps: float = 1e-5
) -> dict[str, Tensor]:
    """Relative importance ``F_f / (F_r + eps)`` for every parameter.

    Args:
        f_forget: Fisher diagonals on the forget data (see :func:`fisher_diagonal`).
        f_retain: Fisher diagonals on the retain data (same keys and shapes).
        eps: Stabiliser added to the retain Fisher (1e-5 in the official code).

    Returns:
        Parameter name → relative importance.
    """
    check_positive("eps", eps)
    if set(f_forget) != set(f_retain):
        missing = sorted(set(f_forget) ^ set(f_retain))
        raise ValueError(f"f_forget and f_retain must have the same keys; differ in {missing}")
    out = {}
    for n, ff in f_forget.items():
        fr = f_retain[n]
        if ff.shape != fr.shape:
            raise ValueError(f"f_forget[{n!r}] and f_retain[{n!r}] differ in shape")
        out[n] = ff / (fr + eps)
    return out


# --------------------------------------------------------------------------------------------
# FILA
# --------------------------------------------------------------------------------------------


@dataclass
class FilaConfig:
    """Settings of the Fisher-weighted LoRA initialisation (PEFT style: config + init function).

    Attributes:
        eps: Stabiliser in the importance ratio ``F_f / (F_r + eps)`` and in ``1 / (w + eps)``.
        svd: ``"exact"`` (``torch.linalg.svd``), ``"lowrank"`` (``torch.svd_lowrank``) or
            ``"auto"`` (exact when the smaller side is at most 4096).
        lowrank_oversample: Extra columns ``q - r`` for ``torch.svd_lowrank``.
        lowrank_niter: Subspace iterations for ``torch.svd_lowrank``.
        retain_batches: Number of retain batches for ``F_r``; ``None`` uses as many as there are
            forget batches (cycling the retain loader), as the official code pairs them.
    """

    eps: float = 1e-5
    svd: Literal["auto", "exact", "lowrank"] = "auto"
    lowrank_oversample: int = 10
    lowrank_niter: int = 4
    retain_batches: int | None = None

    def __post_init__(self) -> None:
        check_positive("eps", self.eps)
        if self.svd not in ("auto", "exact", "lowrank"):
            raise ValueError(f"svd must be 'auto', 'exact' or 'lowrank', got {self.svd!r}")
        if self.lowrank_oversample < 0:
            raise ValueError(f"lowrank_oversample must be >= 0, got {self.lowrank_oversample}")
        if self.lowrank_niter < 0:
            raise ValueError(f"lowrank_niter must be >= 0, got {self.lowrank_niter}")
        if self.retain_batches is not None and self.retain_batches < 1:
            raise ValueError(f"retain_batches must be >= 1 or None, got {self.retain_batches}")


def fila_factors(
    weight: Tensor,
    importance: Tensor,
    rank: int,
    scaling: float,
    *,
    eps: float = 1e-5,
    svd: Literal["auto", "exact", "lowrank"] = "auto",
    lowrank_oversample: int = 10,
    lowrank_niter: int = 4,
) -> tuple[Tensor, Tensor]:
    """LoRA factors ``(A, B)`` of the Fisher-weighted rank-``rank`` approximation of ``weight``.

    ``s · B @ A`` is the best rank-``rank`` approximation of ``weight`` in the row-weighted norm
    ``||diag(w)(·)||_F`` with ``w_i = sqrt(Σ_j importance_ij)`` (up to ``eps``).

    Args:
        weight: ``(d_out, d_in)`` weight matrix.
        importance: Non-negative importance of every entry, same shape.
        rank: LoRA rank ``r``.
        scaling: PEFT's adapter scaling ``s`` (``lora_alpha / r``).
        eps: Stabiliser in ``1 / (w + eps)``.
        svd: ``"exact"``, ``"lowrank"`` or ``"auto"``.
        lowrank_oversample: Extra columns for ``torch.svd_lowrank``.
        lowrank_niter: Subspace iterations for ``torch.svd_lowrank``.

    Returns:
        ``A`` of shape ``(rank, d_in)`` and ``B`` of shape ``(d_out, rank)`` in the dtype of
        ``weight`` (computed in float32, or float64 for float64 input).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a matrix, got shape {tuple(weight.shape)}")
    if importance.shape != weight.shape:
        raise ValueError(
            f"importance must have the weight's shape {tuple(weight.shape)}, "
            f"got {tuple(importance.shape)}"
        )
    d_out, d_in = weight.shape
    if not isinstance(rank, int) or rank < 1 or rank > min(d_out, d_in):
        raise ValueError(
            f"rank (LoRA r) must be an int in [1, min(d_out, d_in)] = [1, {min(d_out, d_in)}], "
            f"got {rank}"
        )
    check_positive("scaling", scaling)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w_mat = weight.detach().to(dtype)
    imp = importance.detach().to(dtype)
    if not bool(torch.isfinite(imp).all()) or bool((imp < 0).any()):
        raise ValueError("importance must be finite and non-negative")
    row_w = imp.sum(dim=1).sqrt()
    target = row_w[:, None] * w_mat
    use_exact = svd == "exact" or (svd == "auto" and min(d_out, d_in) <= 4096)
    if use_exact:
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        u, s, v = u[:, :rank], s[:rank], vh[:rank].mT
    else:
        q = min(rank + lowrank_oversample, d_out, d_in)
        u, s, v = torch.svd_lowrank(target, q=q, niter=lowrank_niter)
        u, s, v = u[:, :rank], s[:rank], v[:, :rank]
    root = (s / scaling).sqrt()
    lora_a = (v * root).mT
    lora_b = (u * root) / (row_w + eps)[:, None]
    return lora_a.to(weight.dtype).contiguous(), lora_b.to(weight.dtype).contiguous()


def lora_layers(model: nn.Module, adapter_name: str = "default") -> dict[str, nn.Module]:
    """The ``peft`` LoRA layers of ``model`` that hold ``adapter_name``, by module name.

    Raises:
        ValueError: If the model has no LoRA layer, or none holds ``adapter_name``.
    """
    lora = require("peft.tuners.lora", "llm")
    found = {n: m for n, m in model.named_modules() if isinstance(m, lora.LoraLayer)}
    if not found:
        raise ValueError(
            "model has no peft LoRA modules; wrap it first, e.g. "
            "peft.get_peft_model(model, LoraConfig(...))"
        )
    layers = {n: m for n, m in found.items() if adapter_name in m.lora_A}
    if not layers:
        have = sorted({a for m in found.values() for a in m.lora_A})
        raise ValueError(
            f"adapter_name {adapter_name!r} not found in the LoRA modules; have {have}"
        )
    return layers


def _base_weight_name(module_name: str) -> str:
    return f"{module_name}.base_layer.weight"


@torch.no_grad()
def fila_init_(
    model: nn.Module,
    importance: Mapping[str, Tensor],
    *,
    adapter_name: str = "default",
    config: FilaConfig | None = None,
) -> None:
    """Write FILA factors into every LoRA layer of ``model`` and keep the residual in the base.

    For each LoRA layer ``m`` (name ``N``) this sets ``m.lora_A[adapter].weight = A``,
    ``m.lora_B[adapter].weight = B`` and ``m.base_layer.weight ← W − s·B A`` so that the model's
    function is unchanged.

    Args:
        model: A ``peft`` LoRA model (e.g. from ``peft.get_peft_model``).
        importance: ``"N.base_layer.weight"`` → importance of that weight (see
            :func:`relative_importance`), as produced for the same model's parameter names.
        adapter_name: Which adapter to initialise.
        config: Settings (:class:`FilaConfig`); defaults if None.
    """
    config = config or FilaConfig()
    for name, module in lora_layers(model, adapter_name).items():
        if module.use_dora.get(adapter_name, False):
            raise ValueError(f"{name}: FILA is defined for plain LoRA, not DoRA (use_dora=True)")
        key = _base_weight_name(name)
        if key not in importance:
            raise ValueError(f"importance has no entry {key!r} for LoRA module {name!r}")
        base = module.get_base_layer()
        transpose = bool(getattr(module, "fan_in_fan_out", False))
        weight = base.weight.T if transpose else base.weight
        imp = importance[key].to(weight.device)
        imp = imp.T if transpose else imp
        rank = module.r[adapter_name]
        if rank > min(weight.shape):
            raise ValueError(
                f"LoRA rank r={rank} of {name!r} exceeds min(d_out, d_in) = {min(weight.shape)}"
            )
        scaling = float(module.scaling[adapter_name])
        lora_a, lora_b = fila_factors(
            weight,
            imp,
            rank,
            scaling,
            eps=config.eps,
            svd=config.svd,
            lowrank_oversample=config.lowrank_oversample,
            lowrank_niter=config.lowrank_niter,
        )
        a_layer, b_layer = module.lora_A[adapter_name], module.lora_B[adapter_name]
        a_layer.weight.copy_(lora_a.to(a_layer.weight.dtype))
        b_layer.weight.copy_(lora_b.to(b_layer.weight.dtype))
        delta = scaling * (b_layer.weight.to(torch.float32) @ a_layer.weight.to(torch.float32))
        new_weight = weight.to(torch.float32) - delta
        base.weight.copy_((new_weight.T if transpose else new_weight).to(base.weight.dtype))


def initialize_fila(
    model: nn.Module,
    forget_loader: Iterable[Mapping[str, Tensor]],
    retain_loader: Iterable[Mapping[str, Tensor]],
    config: FilaConfig | None = None,
    *,
    adapter_name: str = "default",
) -> dict[str, Tensor]:
    """Fisher-weighted LoRA initialisation of a ``peft`` LoRA model from forget/retain data.

    Computes the Fisher diagonals of every LoRA layer's base weight on the forget and retain
    batches (adapters disabled), their ratio, and calls :func:`fila_init_`.

    Args:
        model: A ``peft`` LoRA model.
        forget_loader: Forget batches (HF-style dicts).
        retain_loader: Retain batches.
        config: Settings (:class:`FilaConfig`).
        adapter_name: Which adapter to initialise.

    Returns:
        The relative importance used, by base-weight parameter name.
    """
    config = config or FilaConfig()
    layers = lora_layers(model, adapter_name)
    keys = {_base_weight_name(n) for n in layers}
    forget_batches = list(forget_loader)
    if not forget_batches:
        raise ValueError("forget_loader is empty")
    n_retain = config.retain_batches or len(forget_batches)
    retain_iter = iter(retain_loader)
    first = next(retain_iter, None)
    if first is None:
        raise ValueError("retain_loader is empty")
    retain_batches = list(
        itertools.islice(itertools.cycle(itertools.chain([first], retain_iter)), n_retain)
    )
    enabled = {n: not m.disable_adapters for n, m in layers.items()}
    try:
        for m in layers.values():
            m.enable_adapters(False)

        def select(n: str, _: nn.Parameter) -> bool:
            return n in keys

        f_forget = fisher_diagonal(model, forget_batches, param_filter=select, name="forget_loader")
        f_retain = fisher_diagonal(model, retain_batches, param_filter=select, name="retain_loader")
    finally:
        for n, m in layers.items():
            if enabled[n]:
                m.enable_adapters(True)
    importance = relative_importance(f_forget, f_retain, config.eps)
    fila_init_(model, importance, adapter_name=adapter_name, config=config)
    return importance


# --------------------------------------------------------------------------------------------
# Unlearning loop
# --------------------------------------------------------------------------------------------


class Unlearner:
    """A trainer-free unlearning loop: forget loss on forget batches + retain loss on retain ones.

    ``L = forget_loss(forget batch) + retain_weight · retain_loss(retain batch)`` with
    ``forget_loss`` ∈ {``"ihl"``, ``"ga"``} and ``retain_loss`` ∈ {``"nll"`` (gradient
    difference / the official IHL objective), ``"kl"`` (KL(p_ref ‖ p_θ) to a frozen reference
    model), ``"none"`` (pure forget loss, e.g. plain GA)}.

    Args:
        model: The causal LM to unlearn (full model or a ``peft`` LoRA model).
        forget_loss: ``"ihl"`` or ``"ga"``.
        retain_loss: ``"nll"``, ``"kl"`` or ``"none"``.
        retain_weight: Weight of the retain term.
        ref_model: Frozen reference model, required for ``retain_loss="kl"``.
        optimizer: An optimizer over the trainable parameters; default ``torch.optim.AdamW``.
        lr: Learning rate of the default optimizer.
        weight_decay: Weight decay of the default optimizer.
        max_grad_norm: Clip the global gradient norm to this value (``None``: no clipping).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        forget_loss: Literal["ihl", "ga"] = "ihl",
        retain_loss: Literal["nll", "kl", "none"] = "nll",
        retain_weight: float = 1.0,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        if forget_loss not in ("ihl", "ga"):
            raise ValueError(f"forget_loss must be 'ihl' or 'ga', got {forget_loss!r}")
        if retain_loss not in ("nll", "kl", "none"):
            raise ValueError(f"retain_loss must be 'nll', 'kl' or 'none', got {retain_loss!r}")
        if retain_loss == "kl" and ref_model is None:
            raise ValueError("ref_model is required for retain_loss='kl'")
        check_positive("lr", lr)
        check_nonnegative("retain_weight", retain_weight)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        self.model = model
        self.forget_loss = forget_loss
        self.retain_loss = retain_loss
        self.retain_weight = float(retain_weight)
        self.ref_model = ref_model
        self.max_grad_norm = max_grad_norm
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer is None:
            if not params:
                raise ValueError("model has no trainable parameter")
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.optimizer = optimizer
        self.steps = 0

    def losses(
        self, forget_batch: Mapping[str, Tensor], retain_batch: Mapping[str, Tensor] | None
    ) -> dict[str, Tensor]:
        """The forget term, the retain term and their weighted sum (``"loss"``), with graph."""
        device = _model_device(self.model)
        forget_batch = _to(forget_batch, device)
        logits = causal_lm_logits(self.model, forget_batch)
        labels = _labels_of(forget_batch)
        if self.forget_loss == "ihl":
            forget = inverted_hinge_loss(logits, labels)
        else:
            forget = gradient_ascent_loss(logits, labels)
        out = {"forget_loss": forget, "loss": forget}
        if self.retain_loss != "none":
            if retain_batch is None:
                raise ValueError(f"retain_batch is required for retain_loss={self.retain_loss!r}")
            retain_batch = _to(retain_batch, device)
            r_logits = causal_lm_logits(self.model, retain_batch)
            if self.retain_loss == "nll":
                retain = -gradient_ascent_loss(r_logits, _labels_of(retain_batch))
            else:
                with torch.no_grad():
                    ref_logits = causal_lm_logits(self.ref_model, retain_batch)
                retain = _kl_to_reference(r_logits, ref_logits, retain_batch.get("attention_mask"))
            out["retain_loss"] = retain
            out["loss"] = forget + self.retain_weight * retain
        return out

    def step(
        self, forget_batch: Mapping[str, Tensor], retain_batch: Mapping[str, Tensor] | None = None
    ) -> dict[str, float]:
        """One optimizer step; returns the loss values as floats.

        Raises:
            FloatingPointError: If the loss is NaN or infinite (the step is not applied).
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.losses(forget_batch, retain_batch)
        if not bool(torch.isfinite(terms["loss"])):
            raise FloatingPointError(
                f"unlearning loss became {float(terms['loss'].detach())} at step {self.steps}"
            )
        terms["loss"].backward()
        if self.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.steps += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def fit(
        self,
        forget_loader: Iterable[Mapping[str, Tensor]],
        retain_loader: Iterable[Mapping[str, Tensor]] | None = None,
        epochs: int = 1,
        callback: Callable[[int, Unlearner], Mapping[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``epochs`` passes over the forget loader, pairing each forget batch with the next
        retain batch (the retain loader is cycled).

        Args:
            forget_loader: Forget batches (re-iterated every epoch).
            retain_loader: Retain batches (required unless ``retain_loss="none"``).
            epochs: Number of passes over the forget loader.
            callback: Called as ``callback(epoch, self)`` after each epoch (1-based); a returned
                mapping is merged into that epoch's history entry, and a ``"stop": True`` entry
                ends training.

        Returns:
            One dict per epoch with the mean losses and the callback's values.
        """
        check_positive_int("epochs", epochs)
        if retain_loader is None and self.retain_loss != "none":
            raise ValueError(f"retain_loader is required for retain_loss={self.retain_loss!r}")
        retain_iter = _cycle(retain_loader) if retain_loader is not None else None
        history: list[dict[str, Any]] = []
        for epoch in range(1, epochs + 1):
            sums: dict[str, float] = {}
            n = 0
            for forget_batch in forget_loader:
                retain_batch = next(retain_iter) if retain_iter is not None else None
                for k, v in self.step(forget_batch, retain_batch).items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
            if n == 0:
                raise ValueError("forget_loader is empty")
            entry: dict[str, Any] = {"epoch": epoch, **{k: v / n for k, v in sums.items()}}
            extra = callback(epoch, self) if callback is not None else None
            if extra:
                entry.update(extra)
            history.append(entry)
            if entry.get("stop"):
                break
        return history


def _cycle(loader: Iterable[Mapping[str, Tensor]]):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("retain_loader is empty")


def _kl_to_reference(logits: Tensor, ref_logits: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``KL(p_ref ‖ p_θ)`` averaged over the attended positions."""
    logp = logits.float().log_softmax(-1)
    logq = ref_logits.float().log_softmax(-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    if attention_mask is None:
        return kl.mean()
    mask = attention_mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)
