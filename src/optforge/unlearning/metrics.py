"""Unlearning metrics used by LoKU (arXiv:2408.06621), TOFU and the extraction-attack protocol.

* **Answer accuracy / probability** (forget and retain accuracy): teacher-forced next-token
  argmax accuracy over the target (``labels != -100``) tokens of each sequence, and
  ``P(a | q)^{1/|a|} = exp(mean log p)``.
* **Memorisation accuracy** ``MA(x) = 1/(T−1) Σ_{t=1}^{T−1} 1[argmax_v p(v | x_<t) = x_t]``.
* **Extraction likelihood** ``EL_n(x) = 1/(T−n) Σ_{t=1}^{T−n} OVERLAP_n(f(x_<t), x_≥t)`` with
  ``f`` the greedy continuation of the prefix (as long as the true suffix) and ``OVERLAP_n(a, b)``
  the fraction of the n-grams of ``a`` that occur in ``b``.
* **Truth ratio** ``R = exp(mean_k logp̄(ã_k) − logp̄(â))`` from per-token mean log-probabilities
  of perturbed (wrong) and paraphrased (correct) answers (a geometric mean, as in TOFU).
* **Forget quality**: p-value of the two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``)
  between truth ratios of the unlearned model and of a model trained on the retain set only.
* **Model utility**: harmonic mean (``scipy.stats.hmean``) of the utility numbers; it is 0 when
  any component is 0 (the harmonic-mean limit), which TOFU relies on to punish a collapsed metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from optforge.unlearning.batches import _labels_of, causal_lm_logits

__all__ = [
    "answer_accuracy",
    "answer_logprob",
    "answer_probability",
    "extraction_likelihood",
    "forget_quality",
    "greedy_continuation",
    "memorization_accuracy",
    "model_utility",
    "ngram_overlap",
    "truth_ratio",
    "truth_ratio_score",
]


def _check_batch(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError("batch must be a dict with an 'input_ids' entry")
    labels = _labels_of(batch)[..., 1:]
    mask = labels != -100
    counts = mask.sum(-1)
    if bool((counts == 0).any()):
        raise ValueError("batch: a sequence has no target token (all labels are -100)")
    return labels, mask


@torch.no_grad()
def answer_logprob(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Mean log-probability of the target tokens of each sequence, shape ``(B,)``.

    Args:
        model: A causal LM.
        batch: HF-style dict (``input_ids``, ``attention_mask``, ``labels`` with -100 masking).
    """
    labels, mask = _check_batch(batch)
    logp = causal_lm_logits(model, batch)[:, :-1].float().log_softmax(-1)
    tok = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    return (tok * mask).sum(-1) / mask.sum(-1)


def answer_probability(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """``P(a | q)^{1/|a|}`` per sequence, shape ``(B,)``.

    Args:
        model: A causal LM.
        batch: HF-style dict with ``labels`` selecting the answer tokens.
    """
    return answer_logprob(model, batch).exp()


@torch.no_grad()
def answer_accuracy(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Teacher-forced argmax accuracy over each sequence's target tokens, shape ``(B,)``.

    Args:
        model: A causal LM.
        batch: HF-style dict with ``labels`` selecting the answer tokens.
    """
    labels, mask = _check_batch(batch)
    pred = causal_lm_logits(model, batch)[:, :-1].argmax(-1)
    return ((pred == labels) & mask).sum(-1).float() / mask.sum(-1)


@torch.no_grad()
def memorization_accuracy(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """Memorisation accuracy per sequence (teacher-forced next-token argmax), shape ``(B,)``.

    Args:
        model: A causal LM.
        input_ids: ``(B, T)`` token ids, ``T >= 2``.
        attention_mask: Optional ``(B, T)`` mask; padded positions are not scored.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(
            f"input_ids must have shape (B, T) with T >= 2, got {tuple(input_ids.shape)}"
        )
    batch = {"input_ids": input_ids}
    if attention_mask is not None:
        batch["attention_mask"] = attention_mask
    return answer_accuracy(model, batch)


@torch.no_grad()
def greedy_continuation(model: nn.Module, prefix: Tensor, length: int) -> Tensor:
    """Greedy (argmax) continuation of ``length`` tokens for a batch of equal-length prefixes.

    Args:
        model: A causal LM.
        prefix: ``(B, t)`` token ids, ``t >= 1``.
        length: Number of tokens to generate.

    Returns:
        ``(B, length)`` generated ids.
    """
    seq = prefix
    for _ in range(length):
        nxt = causal_lm_logits(model, {"input_ids": seq})[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prefix.shape[1] :]


def ngram_overlap(
    generated: Sequence[int] | Tensor, reference: Sequence[int] | Tensor, n: int
) -> float:
    """Fraction of the n-grams of ``generated`` that occur among the n-grams of ``reference``.

    Args:
        generated: Token ids ``a``.
        reference: Token ids ``b``.
        n: n-gram order.

    Raises:
        ValueError: If ``generated`` is shorter than ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    a = [int(v) for v in generated]
    b = [int(v) for v in reference]
    if len(a) < n:
        raise ValueError(f"generated has {len(a)} tokens, fewer than n={n}")
    grams = [tuple(a[i : i + n]) for i in range(len(a) - n + 1)]
    ref = {tuple(b[i : i + n]) for i in range(len(b) - n + 1)}
    return sum(g in ref for g in grams) / len(grams)


def extraction_likelihood(model: nn.Module, input_ids: Tensor, n: int = 10) -> Tensor:
    """Extraction likelihood ``EL_n`` per sequence, shape ``(B,)``.

    For every prefix length ``t = 1 … T−n`` the model greedily continues ``x_<t`` for ``T−t``
    tokens and the n-gram overlap with the true suffix ``x_≥t`` is averaged. Costs
    ``O(T²)`` forward passes (no KV cache), meant for short sequences.

    Args:
        model: A causal LM.
        input_ids: ``(B, T)`` token ids (unpadded), ``T > n``.
        n: n-gram order (10 in the extraction-attack protocol).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    seq_len = input_ids.shape[1]
    if n < 1 or seq_len <= n:
        raise ValueError(f"n must lie in [1, T-1] = [1, {seq_len - 1}], got {n}")
    scores = torch.zeros(input_ids.shape[0], dtype=torch.float64)
    for t in range(1, seq_len - n + 1):
        gen = greedy_continuation(model, input_ids[:, :t], seq_len - t).cpu()
        suffix = input_ids[:, t:].cpu()
        for i in range(input_ids.shape[0]):
            scores[i] += ngram_overlap(gen[i], suffix[i], n)
    return scores / (seq_len - n)


def truth_ratio(paraphrased_logp: Tensor, perturbed_logp: Tensor) -> Tensor:
    """TOFU truth ratio ``R = geo-mean_k P(ã_k)^{1/|ã_k|} / P(â)^{1/|â|}`` per question.

    Args:
        paraphrased_logp: ``(N,)`` per-token mean log-probabilities of the correct (paraphrased)
            answers (see :func:`answer_logprob`).
        perturbed_logp: ``(N, K)`` the same for ``K`` perturbed (wrong) answers.

    Returns:
        ``(N,)`` ratios; small means the model prefers the correct answer.
    """
    if perturbed_logp.dim() != 2 or paraphrased_logp.shape != perturbed_logp.shape[:1]:
        raise ValueError(
            "paraphrased_logp must be (N,) and perturbed_logp (N, K); got "
            f"{tuple(paraphrased_logp.shape)} and {tuple(perturbed_logp.shape)}"
        )
    return (perturbed_logp.mean(-1) - paraphrased_logp).exp()


def truth_ratio_score(ratios: Tensor) -> float:
    """Utility score ``mean max(0, 1 − R)`` of truth ratios on retained knowledge.

    Args:
        ratios: Truth ratios (see :func:`truth_ratio`).
    """
    return float((1.0 - ratios).clamp_min(0.0).mean())


def forget_quality(tr_unlearned: Tensor | np.ndarray, tr_retrained: Tensor | np.ndarray) -> float:
    """Forget quality: the KS two-sample p-value between truth-ratio samples.

    Args:
        tr_unlearned: Truth ratios on the forget set of the unlearned model.
        tr_retrained: Truth ratios on the forget set of a model trained on the retain set only.

    Returns:
        The p-value of ``scipy.stats.ks_2samp`` (1 = indistinguishable from retraining).
    """
    from scipy.stats import ks_2samp

    a = np.asarray(torch.as_tensor(tr_unlearned).detach().cpu(), dtype=float).ravel()
    b = np.asarray(torch.as_tensor(tr_retrained).detach().cpu(), dtype=float).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("tr_unlearned and tr_retrained must be non-empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("tr_unlearned and tr_retrained must be finite")
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float] | Sequence[float]) -> float:
    """Model utility: the harmonic mean of non-negative utility numbers (0 if any is 0).

    Args:
        values: The component metrics (e.g. retain accuracy and probability, world-fact
            accuracy and probability), as a mapping or a sequence.
    """
    from scipy.stats import hmean

    vals = np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values), float)
    if vals.size == 0:
        raise ValueError("values must be non-empty")
    if not np.isfinite(vals).all() or (vals < 0).any():
        raise ValueError("values must be finite and non-negative")
    if (vals == 0).any():
        return 0.0
    return float(hmean(vals))
