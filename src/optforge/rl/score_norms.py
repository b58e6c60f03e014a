r"""Per-sample squared score norms :math:`w_i = \lVert\nabla_\theta\log\pi(y_i\mid x_i)\rVert^2`.

They weight the optimal baseline (:func:`~optforge.rl.advantages`) and give the per-sample terms
of the SNR estimate (:class:`~optforge.rl.SNRLearningRate`). With
:math:`\log\pi(y_i\mid x_i) = \sum_t m_{it}\log\pi_{it}` (response tokens only):

* ``exact``: one backward per sample (the reference);
* ``ghost``: one backward, exact for ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm`` and
  RMSNorm-style modules through T×T Gram matrices (every parameter of a Llama or of
  :class:`~optforge.rl.TinyCausalLM`), see :mod:`optforge.func.ghost_norms`;
* ``head``: the ghost norm of the LM head only;
* ``logit``: a forward-only proxy,
  :math:`\sum_t m_{it}\lVert\mathrm{softmax}(z_{t-1}/\tau)-\mathrm{onehot}(y_t)\rVert^2/\tau^2`
  (the squared norm of the score w.r.t. the logits);
* ``length``: the response length (OPO's proxy); ``uniform``: ones (gives RLOO).

Example::

    w = score_sqnorms(model, input_ids, attention_mask, response_mask, method="ghost")   # [N]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import check_choice
from optforge.func import GhostNormRecorder, UnsupportedModuleError, per_example_grad_sqnorms
from optforge.rl.logprobs import _as_float, _causal_logits, _check_batch, token_logprobs

__all__ = ["NORM_METHODS", "NormMethod", "score_sqnorms"]

NormMethod = Literal["exact", "ghost", "head", "logit", "length", "uniform"]
NORM_METHODS: tuple[str, ...] = ("exact", "ghost", "head", "logit", "length", "uniform")


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
        model: A causal LM (see :func:`~optforge.rl.token_logprobs`).
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
    check_choice("method", method, NORM_METHODS)
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

    def seq_logprobs() -> Tensor:
        return _seq_logprobs(model, input_ids, attention_mask, response_mask, temperature)

    with _ghost_errors(method):
        if method == "ghost":
            return per_example_grad_sqnorms(model, seq_logprobs)
        recorder = GhostNormRecorder([_output_head(model)])
        with torch.enable_grad(), recorder:
            seq = seq_logprobs()
        return recorder.sqnorms(seq)


def _seq_logprobs(
    model: nn.Module, ids: Tensor, attn: Tensor | None, resp: Tensor, temperature: float
) -> Tensor:
    tok = token_logprobs(model, ids, attn, temperature=temperature)
    return (tok * resp.to(tok.dtype)).sum(dim=1)


@contextmanager
def _ghost_errors(method: str) -> Iterator[None]:
    """Name the ``method`` and its exact alternative in the errors of the ghost-norm layer."""
    try:
        yield
    except UnsupportedModuleError as err:
        raise ValueError(
            f"method={method!r} cannot be used here: {err}; use method='exact'"
        ) from err


def _output_head(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Linear):
        raise ValueError("method='head' needs model.get_output_embeddings() to return an nn.Linear")
    return head
