"""A tiny randomly initialised ``transformers`` Llama for the reproductions.

Nothing is downloaded: the model is built from a ``transformers.LlamaConfig`` whose fields are the
keyword arguments, and its weights are drawn after ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng``, so the same seed gives the same weights and building a model leaves
the global generator where it was.

Example::

    from optforge.repro.llm import tiny_llama

    model = tiny_llama(
        seed=0,
        vocab_size=64,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optforge._core import require

__all__ = ["tiny_llama"]


def tiny_llama(*, seed: int, device: str = "cpu", **config: Any) -> nn.Module:
    """A random-init ``LlamaForCausalLM(LlamaConfig(**config))`` on ``device``, from ``seed``."""
    transformers = require("transformers", "llm")
    llama_config = transformers.LlamaConfig(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(llama_config)
    return model.to(device)
