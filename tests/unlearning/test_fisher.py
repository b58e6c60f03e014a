"""Empirical Fisher diagonals and the relative importance (optforge.unlearning.fisher)."""

import pytest
import torch
from torch import nn

from optforge.unlearning import fisher_diagonal, relative_importance

pytest.importorskip("transformers")
pytest.importorskip("peft")

from _unlearning_models import batch, tiny_llama


class LinearSoftmaxLM(nn.Module):
    """logits_t = W[:, x_t] (one-hot input, one linear layer)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, vocab, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None):
        return self.weight.T[input_ids]


def test_fisher_batch_size_one_matches_analytic_per_example_gradients():
    torch.manual_seed(3)
    v = 5
    model = LinearSoftmaxLM(v)
    seqs = [torch.randint(0, v, (1, 6)) for _ in range(4)]
    batches = [{"input_ids": s, "labels": s} for s in seqs]
    fisher = fisher_diagonal(model, batches)["weight"]
    w = model.weight.detach()
    expected = torch.zeros_like(w)
    for s in seqs:
        x, y = s[0, :-1], s[0, 1:]
        p = w.T[x].softmax(-1)  # (n, V)
        resid = p - torch.eye(v, dtype=w.dtype)[y]  # dCE_t/dlogits
        grad = torch.zeros_like(w)
        for t in range(len(x)):  # logits_t = W[:, x_t]  =>  dW[:, x_t] += resid_t
            grad[:, x[t]] += resid[t]
        grad /= len(x)
        expected += len(x) * grad.square()
    expected /= sum(s.shape[1] - 1 for s in seqs)
    torch.testing.assert_close(fisher, expected.float())


def test_fisher_token_count_weighting_with_unequal_batches():
    model = tiny_llama()
    b1, b2 = batch(1, b=2), batch(2, b=3)
    b2["labels"][:, -2:] = -100  # fewer target tokens
    name = "model.layers.0.self_attn.q_proj.weight"
    fisher = fisher_diagonal(model, [b1, b2], param_filter=lambda n, p: n == name)
    assert set(fisher) == {name}
    ref = torch.zeros_like(fisher[name])
    total = 0
    for b in (b1, b2):
        model.zero_grad()
        model(**b).loss.backward()
        n_b = int((b["labels"][:, 1:] != -100).sum())
        ref += n_b * dict(model.named_parameters())[name].grad.square()
        total += n_b
    torch.testing.assert_close(fisher[name], ref / total, rtol=1e-4, atol=1e-10)
    # the model is left as it was (no grads kept, flags restored)
    assert all(p.requires_grad for p in model.parameters())


def test_fisher_and_importance_bad_inputs():
    model = tiny_llama()
    with pytest.raises(ValueError, match="forget_loader is empty"):
        fisher_diagonal(model, [], name="forget_loader")
    with pytest.raises(ValueError, match="no target token"):
        fisher_diagonal(model, [{"input_ids": torch.zeros(1, 4, dtype=torch.long),
                                 "labels": torch.full((1, 4), -100)}])  # fmt: skip
    with pytest.raises(ValueError, match="param_filter"):
        fisher_diagonal(model, [batch(0)], param_filter=lambda n, p: False)
    with pytest.raises(ValueError, match="same keys"):
        relative_importance({"a": torch.ones(1)}, {"b": torch.ones(1)})
    imp = relative_importance({"a": torch.tensor([2.0])}, {"a": torch.tensor([1.0])}, eps=1.0)
    assert imp["a"].item() == pytest.approx(1.0)
