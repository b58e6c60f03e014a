"""Unlearning metrics on known cases: memorisation, extraction, truth ratio, KS, utility."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp
from torch import nn

from optforge.unlearning import (
    answer_accuracy,
    answer_logprob,
    answer_probability,
    extraction_likelihood,
    forget_quality,
    greedy_continuation,
    memorization_accuracy,
    model_utility,
    ngram_overlap,
    truth_ratio,
    truth_ratio_score,
)

V = 10


class BigramLookup(nn.Module):
    """Predicts next = table[current] with a large margin (a model that memorised a chain)."""

    def __init__(self, table: list[int], margin: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(table))
        self.margin = margin

    def forward(self, input_ids, attention_mask=None):
        return nn.functional.one_hot(self.table[input_ids], V).float() * self.margin


class Constant(nn.Module):
    """Always predicts ``token``."""

    def __init__(self, token: int) -> None:
        super().__init__()
        self.token = token

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, V)
        logits[..., self.token] = 1.0
        return logits


CHAIN = [(i + 1) % V for i in range(V)]  # 0 -> 1 -> 2 -> ...


def test_memorization_accuracy_of_a_memorised_and_a_constant_model():
    x = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]])
    torch.testing.assert_close(memorization_accuracy(BigramLookup(CHAIN), x), torch.ones(2))
    # constant 4: hits x_t = 4 once in each sequence, out of T - 1 = 5 positions
    torch.testing.assert_close(memorization_accuracy(Constant(4), x), torch.full((2,), 0.2))
    # padding positions are not scored
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    got = memorization_accuracy(Constant(2), x, mask)
    torch.testing.assert_close(got, torch.tensor([0.5, 0.0]))


def test_ngram_overlap_hand_made():
    assert ngram_overlap([1, 2, 3, 4], [9, 2, 3, 4, 9], 2) == pytest.approx(2 / 3)
    assert ngram_overlap([1, 2, 3], [1, 2, 3], 3) == 1.0
    assert ngram_overlap([5, 5], [1, 2], 1) == 0.0
    with pytest.raises(ValueError, match="fewer than n"):
        ngram_overlap([1], [1, 2], 2)


def test_extraction_likelihood_known_cases():
    x = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    assert extraction_likelihood(BigramLookup(CHAIN), x, n=2).item() == pytest.approx(1.0)
    # constant 9 generates [9, 9, ...]: its bigrams (9, 9) never occur in the suffix
    assert extraction_likelihood(Constant(9), x, n=2).item() == pytest.approx(0.0)
    # a chain that breaks: table maps 3 -> 0, so continuing from t tokens is hand-computable
    table = list(CHAIN)
    table[3] = 0
    model = BigramLookup(table)
    n, seq = 2, x[0].tolist()
    expected = []
    for t in range(1, len(seq) - n + 1):
        gen = [seq[t - 1]]
        for _ in range(len(seq) - t):
            gen.append(table[gen[-1]])
        expected.append(ngram_overlap(gen[1:], seq[t:], n))
    assert greedy_continuation(model, x[:, :2], 3).tolist() == [[2, 3, 0]]
    got = extraction_likelihood(model, x, n=n).item()
    assert got == pytest.approx(sum(expected) / len(expected))
    assert 0 < got < 1
    with pytest.raises(ValueError, match="n must"):
        extraction_likelihood(model, x, n=7)


def test_answer_accuracy_and_probability():
    x = torch.tensor([[0, 1, 2, 3], [0, 1, 5, 3]])
    labels = torch.tensor([[-100, -100, 2, 3], [-100, -100, 5, 3]])
    b = {"input_ids": x, "labels": labels}
    torch.testing.assert_close(answer_accuracy(BigramLookup(CHAIN), b), torch.tensor([1.0, 0.0]))
    # Constant(2) logits: p(2) = e / (e + 9)
    p_hit = math.e / (math.e + V - 1)
    p_miss = 1 / (math.e + V - 1)
    expected = torch.tensor([(math.log(p_hit) + math.log(p_miss)) / 2, math.log(p_miss)])
    torch.testing.assert_close(answer_logprob(Constant(2), b), expected)
    torch.testing.assert_close(answer_probability(Constant(2), b), expected.exp())
    with pytest.raises(ValueError, match="no target token"):
        answer_accuracy(Constant(2), {"input_ids": x, "labels": torch.full_like(x, -100)})


def test_truth_ratio_forget_quality_and_utility():
    para = torch.log(torch.tensor([0.5, 0.25]))
    pert = torch.log(torch.tensor([[0.25, 0.25], [0.5, 0.125]]))
    # R = geo-mean P(perturbed) / P(paraphrased)
    torch.testing.assert_close(
        truth_ratio(para, pert), torch.tensor([0.5, math.sqrt(0.0625) / 0.25])
    )
    assert truth_ratio_score(torch.tensor([0.5, 2.0])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="perturbed_logp"):
        truth_ratio(para, pert[0])
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(0.5, 1.0, size=25)
    assert forget_quality(torch.tensor(a), b) == pytest.approx(ks_2samp(a, b).pvalue)
    with pytest.raises(ValueError, match="non-empty"):
        forget_quality([], b)
    assert model_utility({"acc": 0.9, "prob": 0.5, "world": 0.8}) == pytest.approx(
        hmean([0.9, 0.5, 0.8])
    )
    assert model_utility([0.9, 0.0, 0.8]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([0.5, -0.1])
