"""Empirical Fisher diagonals of a causal LM and the forget/retain relative importance.

``F = Σ_b n_b (∂CE_b/∂θ)² / Σ_b n_b`` with ``CE_b`` the batch-mean next-token cross-entropy and
``n_b`` its number of target tokens; the relative importance of every weight for the forget set is
``I = F_forget / (F_retain + eps)`` (LoKU, Cha et al., ICLR 2025, arXiv:2408.06621; used by
:func:`optforge.unlearning.initialize_fila`).

Example::

    f_forget = fisher_diagonal(model, forget_batches)
    f_retain = fisher_diagonal(model, retain_batches)
    importance = relative_importance(f_forget, f_retain)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from optforge._core import check_positive
from optforge.unlearning.batches import _labels_of, _model_device, _to, causal_lm_logits
from optforge.unlearning.losses import gradient_ascent_loss

__all__ = ["fisher_diagonal", "relative_importance"]


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
