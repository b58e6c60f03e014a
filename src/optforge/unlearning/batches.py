"""Hugging Face-style batch dicts for a causal LM: logits, target labels, device moves.

A batch is a mapping with ``input_ids`` and optionally ``attention_mask`` and ``labels``
(``-100`` marks positions that are not trained). Without ``labels`` the targets are the input ids
with the padding (``attention_mask == 0``) masked out.

Example::

    logits = causal_lm_logits(model, {"input_ids": ids, "attention_mask": mask})   # (B, T, V)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["causal_lm_logits"]


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


def _labels_of(batch: Mapping[str, Tensor]) -> Tensor:
    if "labels" in batch:
        return batch["labels"]
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    return labels


def _to(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
