r"""Per-token log-probabilities of a causal language model, and the batch layout they use.

A batch is ``input_ids [N, T]`` (prompt followed by response), an optional
``attention_mask [N, T]`` (1 = real token) and a ``response_mask [N, T]`` (1 on response tokens).
The model gives logits ``[N, T, V]`` (a tensor, or an object with ``.logits`` such as
``AutoModelForCausalLM``'s output). With temperature :math:`\tau`, token t is scored by the logits
of position t − 1:

.. math::

    \log\pi(y_t \mid y_{<t}) = \operatorname{log\,softmax}(z_{t-1}/\tau)[y_t],

so position 0 has no score (it gets 0 and may not be a response token).

Example::

    logp = token_logprobs(model, input_ids, attention_mask, temperature=1.0)   # [N, T]
    seq = (logp * response_mask).sum(dim=1)                                    # log π(y | x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import check_positive

__all__ = ["token_logprobs"]


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


def _causal_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    return _checked_logits(
        model, model(input_ids=input_ids, attention_mask=attention_mask), input_ids
    )


def _checked_logits(model: nn.Module, out: object, input_ids: Tensor) -> Tensor:
    """The ``[N, T, V]`` logits of ``model``'s output ``out`` for ``input_ids`` (a tensor or an
    output with ``.logits``), or a clear error."""
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
