"""Small causal-LM batches and models shared by the rl tests."""

from __future__ import annotations

import torch

from optforge.rl import TinyCausalLM


def _batch(n=6, t=9, vocab=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n, t), generator=gen)
    attn = torch.ones_like(ids)
    attn[0, -2:] = 0  # right padding
    resp = torch.zeros_like(ids)
    resp[:, 5:] = 1
    resp[0, -2:] = 0
    resp[1, -1] = 0  # variable response lengths
    return ids, attn, resp


def _tiny(seed=0, **kw):
    cfg = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_mlp": 48, "max_len": 16}
    cfg.update(kw)
    return TinyCausalLM(10, generator=torch.Generator().manual_seed(seed), **cfg)
