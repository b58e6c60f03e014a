"""Tests for optforge.rl.score_norms: the head/logit/length/uniform norms and input checks.

Ghost == exact is tested in tests/func/test_ghost_norms.py.
"""

from __future__ import annotations

import pytest
import torch
from _rl_helpers import _batch, _tiny
from torch import nn

from optforge.rl import score_sqnorms, token_logprobs


def test_head_and_logit_norms_match_explicit_computations():
    model = _tiny()
    ids, attn, resp = _batch()
    head = score_sqnorms(model, ids, attn, resp, method="head")
    for i in range(ids.shape[0]):
        seq = (token_logprobs(model, ids[i : i + 1], attn[i : i + 1]) * resp[i]).sum()
        grads = torch.autograd.grad(seq, list(model.head.parameters()))
        assert head[i].item() == pytest.approx(sum(g.pow(2).sum() for g in grads).item(), rel=1e-4)
    temp = 0.7
    logit = score_sqnorms(model, ids, attn, resp, method="logit", temperature=temp)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1] / temp, -1)
        onehot = torch.nn.functional.one_hot(ids[:, 1:], 10).float()
        explicit = ((probs - onehot).pow(2).sum(-1) / temp**2 * resp[:, 1:]).sum(1)
    assert torch.allclose(logit, explicit, rtol=1e-5)
    assert torch.equal(score_sqnorms(model, ids, attn, resp, method="length"), resp.sum(1).float())
    assert torch.equal(score_sqnorms(model, ids, attn, resp, method="uniform"), torch.ones(6))


def test_score_norm_bad_inputs():
    model = _tiny()
    ids, attn, resp = _batch()
    bad = resp.clone()
    bad[2] = 0
    with pytest.raises(ValueError, match="no response token"):
        score_sqnorms(model, ids, attn, bad)
    first = resp.clone()
    first[:, 0] = 1
    with pytest.raises(ValueError, match=r"response_mask\[:, 0\]"):
        score_sqnorms(model, ids, attn, first)
    with pytest.raises(ValueError, match="response_mask must have shape"):
        score_sqnorms(model, ids, attn, resp[:, :-1])
    with pytest.raises(ValueError, match="method must be one of"):
        score_sqnorms(model, ids, attn, resp, method="fast")

    class NoHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask=None):
            return {"last_hidden_state": self.emb(input_ids)}

    with pytest.raises(TypeError, match="causal language model"):
        score_sqnorms(NoHead(), ids, attn, resp, method="logit")

    class Extra(nn.Module):  # a parameter ghost norms cannot see
        def __init__(self):
            super().__init__()
            self.lm = _tiny()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, input_ids, attention_mask=None):
            return self.lm(input_ids, attention_mask).logits * self.scale

    with pytest.raises(ValueError, match="method='exact'"):
        score_sqnorms(Extra(), ids, attn, resp, method="ghost")
    exact = score_sqnorms(Extra(), ids, attn, resp, method="exact")
    assert exact.shape == (6,)


def test_base_model_without_lm_head_is_rejected():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    ids, attn, resp = _batch()
    with pytest.raises(TypeError, match="LM head"):
        score_sqnorms(transformers.LlamaModel(cfg), ids, attn, resp, method="logit")


def test_recorded_forward_norms_equal_score_sqnorms_bit_for_bit():
    """The oblr-po variance arm takes the ghost norms and the sequence log-probs (integer
    response mask) from one recorded forward: the same bits as ``score_sqnorms`` and a separate
    forward, and the same parameter gradients."""
    from optforge.func import GhostNormRecorder
    from optforge.rl.score_norms import GhostScoreGradients

    model = _tiny(5)
    ids, attn, resp = _batch(n=6)
    with GhostNormRecorder.for_model(model) as rec:
        seq = (token_logprobs(model, ids, attn) * resp).sum(dim=1)
    w = GhostScoreGradients(rec, seq, retain_graph=True).sqnorms()
    assert torch.equal(w, score_sqnorms(model, ids, attn, resp, method="ghost"))
    params = list(model.parameters())
    fresh = (token_logprobs(model, ids, attn) * resp).sum(dim=1)
    assert torch.equal(seq, fresh)
    a = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.3])
    g_rec = torch.autograd.grad(-(a * seq).mean(), params)
    g_fresh = torch.autograd.grad(-(a * fresh).mean(), params)
    assert all(torch.equal(x, y) for x, y in zip(g_rec, g_fresh, strict=True))
