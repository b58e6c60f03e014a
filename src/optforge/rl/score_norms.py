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

:class:`GhostScoreGradients` keeps the per-sample score gradients of one recorded forward pass in
factored form, so that besides :math:`w_i` it gives the squared norm of any weighted sum of them
over consecutive groups, e.g. the per-prompt policy gradients
:math:`\lVert\sum_{j\in\text{prompt } k} a_j\nabla_\theta\log\pi(y_j\mid x_k)\rVert^2`
that the SNR learning rate needs (the G responses of a prompt are not independent; the prompts
are).

Example::

    w = score_sqnorms(model, input_ids, attention_mask, response_mask, method="ghost")   # [N]

    with GhostNormRecorder.for_model(model) as rec:
        seq = (token_logprobs(model, input_ids, attention_mask) * response_mask).sum(1)
    grads = GhostScoreGradients(rec, seq)
    w = grads.sqnorms()                                      # [N], as above
    per_prompt = grads.sqnorms(weights=adv, group_size=8)    # [N / 8]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import check_choice, check_positive_int
from optforge.func import (
    GhostNormRecorder,
    UnsupportedModuleError,
    layer_grad_sqnorms,
    per_example_grad_sqnorms,
)
from optforge.rl.logprobs import _as_float, _causal_logits, _check_batch, token_logprobs

__all__ = ["NORM_METHODS", "GhostScoreGradients", "NormMethod", "score_sqnorms"]

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


class GhostScoreGradients:
    r"""Per-sample gradients of a recorded forward pass, in factored (ghost) form.

    One backward of :math:`\sum_i \mathrm{seq}_i` through the recorded modules gives every
    layer's inputs :math:`X_i` and output gradients :math:`D_i` per sample; the gradient of
    :math:`\sum_{j\in k} a_j\,\mathrm{seq}_j` for a group k of samples is then the layer
    gradient of the inputs and the scaled output gradients :math:`a_jD_j` of the group
    concatenated in time, whose squared norm :func:`~optforge.func.layer_grad_sqnorms` gives
    exactly (samples do not interact in a batch-first model).

    Args:
        recorder: A :class:`~optforge.func.GhostNormRecorder` whose context held the forward pass
            (its recorded activations are released).
        seq: ``[N]`` per-sample outputs of that forward pass (e.g. sequence log-probs).
        retain_graph: Keep the graph for a later backward (e.g. of the loss).

    Raises:
        UnsupportedModuleError: activations that are not batch-first.
        ValueError: ``seq`` not 1-D, or no supported module ran in the forward pass.
    """

    def __init__(
        self, recorder: GhostNormRecorder, seq: Tensor, *, retain_graph: bool = False
    ) -> None:
        if not isinstance(seq, Tensor) or seq.dim() != 1:
            shape = getattr(seq, "shape", type(seq).__name__)
            raise ValueError(f"seq must be a 1-D tensor of per-sample outputs, got {shape}")
        n = seq.shape[0]
        calls = [(kind, m, x, y) for kind, m, store in recorder.entries for x, y in store]
        if not calls:
            raise ValueError(
                "no supported module with trainable parameters ran in the forward pass"
            )
        with torch.enable_grad():
            total = seq.sum()
        deltas = torch.autograd.grad(
            total, [y for *_, y in calls], allow_unused=True, retain_graph=retain_graph
        )
        layers: dict[int, tuple[nn.Module, list[Tensor], list[Tensor]]] = {}
        for (kind, module, x, y), d in zip(calls, deltas, strict=True):
            d = torch.zeros_like(y) if d is None else d.detach()
            if x.dim() < 2 or x.shape[0] != n or d.shape[0] != n:
                raise UnsupportedModuleError(
                    f"ghost norms need batch-first activations; a module saw shape "
                    f"{tuple(x.shape)} for a batch of {n}"
                )
            entry = layers.setdefault(id(module), (module, [], []))
            entry[1].append(
                x.reshape(n, -1) if kind == "embedding" else x.reshape(n, -1, x.shape[-1])
            )
            entry[2].append(d.reshape(n, -1, d.shape[-1]))
        for *_, store in recorder.entries:
            store.clear()
        # a module called several times: the calls are concatenated in time (a single call is
        # kept as it is: no copy)
        self.layers = [
            (m, *(t[0] if len(t) == 1 else torch.cat(t, dim=1) for t in (xs, ds)))
            for m, xs, ds in layers.values()
        ]
        self.n = n

    def sqnorms(self, weights: Tensor | None = None, group_size: int = 1) -> Tensor:
        """``||Σ_{j∈k} a_j ∇_θ seq_j||²`` for consecutive groups k of ``group_size`` samples.

        Args:
            weights: ``[N]`` coefficients ``a_j`` (``None``: ones).
            group_size: Samples per group; must divide N (1: per-sample norms ``w_i``).

        Returns:
            ``[N / group_size]`` float32 squared norms (detached).
        """
        g = check_positive_int("group_size", group_size)
        if self.n % g:
            raise ValueError(f"group_size={g} must divide the number of samples {self.n}")
        if weights is not None and tuple(weights.shape) != (self.n,):
            raise ValueError(f"weights must have shape [{self.n}], got {tuple(weights.shape)}")
        k = self.n // g
        acc: Tensor | None = None
        for module, x, d in self.layers:
            if weights is not None:
                d = d * weights.detach().to(d.dtype).view(-1, 1, 1)
            x = x.reshape(k, -1) if x.dim() == 2 else x.reshape(k, -1, x.shape[-1])
            sq = layer_grad_sqnorms(module, x, d.reshape(k, -1, d.shape[-1])).double()
            acc = sq if acc is None else acc + sq
        assert acc is not None
        return acc.to(torch.float32)


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
