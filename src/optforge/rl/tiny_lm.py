"""A tiny causal transformer in plain torch, for CPU-sized policy-gradient experiments.

It follows the Hugging Face calling convention (``model(input_ids=..., attention_mask=...)``
returns an object with ``.logits`` of shape ``[N, T, V]``; ``get_output_embeddings()`` returns the
LM head) so everything in :mod:`optforge.rl` that accepts an ``AutoModelForCausalLM`` accepts it
too. Every parameter lives in an ``nn.Linear``, ``nn.Embedding`` or ``nn.LayerNorm`` and positions
are looked up per sample, so ghost norms (:mod:`optforge.func.ghost_norms`, used by
:func:`optforge.rl.score_sqnorms` with ``method="ghost"``) are exact for it (no parameter left out).

Architecture: token + learned position embeddings, ``n_layers`` pre-LN blocks (single- or
multi-head causal self-attention, GELU MLP), final LayerNorm, untied linear head.

Example::

    model = TinyCausalLM(vocab_size=10, d_model=64, n_layers=1, max_len=16,
                         generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=torch.randint(10, (2, 8))).logits   # [2, 8, 10]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optforge._core import check_positive_int

__all__ = ["CausalLMOutput", "TinyCausalLM"]


@dataclass
class CausalLMOutput:
    """Minimal stand-in for ``transformers``' ``CausalLMOutputWithPast``: ``logits`` and, with
    ``use_cache=True``, the per-layer ``(keys, values)`` of every position so far."""

    logits: Tensor
    past_key_values: tuple[tuple[Tensor, Tensor], ...] | None = None


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_mlp)
        self.fc2 = nn.Linear(d_mlp, d_model)

    def forward(
        self, x: Tensor, key_mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` [N, t, d] after the block, and the keys and values of all positions so far
        (``past``: those of the earlier positions; ``key_mask`` then covers all of them)."""
        n, t, d = x.shape
        h = self.ln1(x)
        heads = (n, t, self.n_heads, d // self.n_heads)
        q, k, v = (proj(h).view(heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        total = k.shape[2]  # keys: the earlier positions, then these t
        if total > t:
            # The queries padded with zero rows to all positions, and the attention computed as
            # for the whole sequence, then cut to the last t rows: the products then run through
            # the same (total × total) kernels as the whole sequence's forward, so a one-layer
            # model's incremental logits equal the full forward's bit for bit (a (t × total)
            # product rounds differently); costs O(total² d) instead of O(t·total·d): nothing
            # at max_len of a few dozen.
            q = torch.cat([q.new_zeros(n, self.n_heads, total - t, d // self.n_heads), q], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        allowed = torch.ones(total, total, dtype=torch.bool, device=x.device).tril()
        if key_mask is not None:
            # padded keys are never attended to; a fully padded row keeps its own position
            allowed = allowed & (
                key_mask[:, None, None, :].bool()
                | torch.eye(total, device=x.device, dtype=torch.bool)
            )
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = (torch.softmax(scores, dim=-1) @ v)[:, :, total - t :]
        x = x + self.o(att.transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)))), (k, v)


class TinyCausalLM(nn.Module):
    """Tiny pre-LN causal transformer returning ``CausalLMOutput(logits)``.

    Args:
        vocab_size: Number of tokens.
        d_model: Width of the residual stream.
        n_layers: Number of transformer blocks.
        n_heads: Attention heads (must divide ``d_model``).
        d_mlp: Hidden width of the MLP.
        max_len: Longest sequence (learned positions).
        generator: Generator for the initialisation (default: seeded from ``torch.initial_seed()``
            so the global RNG is untouched).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_layers: int = 1,
        n_heads: int = 1,
        d_mlp: int = 128,
        max_len: int = 32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("d_mlp", d_mlp),
            ("max_len", max_len),
        ]:
            check_positive_int(name, value)
        if d_model % n_heads:
            raise ValueError(
                f"n_heads must divide d_model, got n_heads={n_heads}, d_model={d_model}"
            )
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        gen = (
            generator
            if generator is not None
            else torch.Generator().manual_seed(torch.initial_seed())
        )
        # torch's default initialisation (U(±1/sqrt(fan_in)) for Linear, N(0, 1) for Embedding)
        # drawn from ``gen``; a 0.02-std init learned the successor task ~4x slower
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.uniform_(-bound, bound, generator=gen)
                    module.bias.uniform_(-bound, bound, generator=gen)
                elif isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, 1.0, generator=gen)

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head (Hugging Face's name for it)."""
        return self.head

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values: tuple[tuple[Tensor, Tensor], ...] | None = None,
        use_cache: bool = False,
    ) -> CausalLMOutput:
        """Logits ``[N, T, V]`` for token ids ``[N, T]`` (``attention_mask`` 1 = real token).

        As in ``transformers``: with ``use_cache=True`` the output also carries
        ``past_key_values``; passed back with only the new tokens as ``input_ids`` (and the
        ``attention_mask`` of all positions so far), they continue the sequence without
        recomputing the earlier positions (incremental decoding).
        """
        n, t = input_ids.shape
        past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if past + t > self.max_len:
            raise ValueError(f"input_ids has length {past + t} > max_len={self.max_len}")
        if attention_mask is not None and attention_mask.shape != (n, past + t):
            raise ValueError(
                f"attention_mask must have shape {(n, past + t)} (all positions so far), got "
                f"{tuple(attention_mask.shape)}"
            )
        # positions are looked up per sample ([N, T]) so per-sample gradients stay separable
        positions = torch.arange(past, past + t, device=input_ids.device).expand(n, t)
        x = self.tok(input_ids) + self.pos(positions)
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(
                x, attention_mask, None if past_key_values is None else past_key_values[i]
            )
            cache.append(kv)
        logits = self.head(self.ln_f(x))
        return CausalLMOutput(logits=logits, past_key_values=tuple(cache) if use_cache else None)
