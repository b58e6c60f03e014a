r"""The on-policy policy-gradient loss with TRL's aggregations (``loss_type``).

For N responses with per-token log-probs :math:`\log\pi_{it}`, response mask :math:`m_{it}`,
lengths :math:`L_i = \sum_t m_{it}` and (detached) advantages :math:`A_i`,

.. math::

    \mathcal L = -\frac1N \sum_i c_i\, A_i \sum_t m_{it}\log\pi_{it},
    \qquad
    c_i = \begin{cases}
        1 & \texttt{seq\_sum} \text{ (the estimator of the theory)}\\
        1/L_i & \texttt{grpo} \text{ (per-sequence mean)}\\
        N/\sum_j L_j & \texttt{bnpo}, \texttt{dapo} \text{ (token mean over the batch)}\\
        1/L_{max} & \texttt{dr\_grpo} \text{ (a constant)}
    \end{cases}

With one on-policy step the importance ratio is 1 and PPO's clipping is inactive, so the gradient
equals that of TRL's clipped loss for the same ``loss_type``.

Example::

    logp = token_logprobs(model, ids, attn)                          # [N, T]
    loss = policy_gradient_loss(logp, adv, response_mask, loss_type="grpo")
    loss.backward()
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_choice, check_finite, check_positive_int
from optforge.rl.logprobs import _check_response_mask

__all__ = ["LOSS_TYPES", "LossType", "loss_coefficients", "policy_gradient_loss"]

LossType = Literal["seq_sum", "grpo", "bnpo", "dapo", "dr_grpo"]
LOSS_TYPES: tuple[str, ...] = ("seq_sum", "grpo", "bnpo", "dapo", "dr_grpo")


def loss_coefficients(
    response_mask: Tensor,
    loss_type: LossType = "seq_sum",
    *,
    max_completion_length: int | None = None,
) -> Tensor:
    """Per-sample factors ``c_i`` such that each loss is ``-(1/N) Σ_i c_i A_i Σ_t log π_it``.

    ``seq_sum``: 1 (the estimator of the theory); ``grpo``: ``1/L_i`` (per-sequence mean);
    ``bnpo``/``dapo``: ``N / Σ_i L_i`` (token mean over the local batch); ``dr_grpo``:
    ``1 / max_completion_length`` (a constant; default: the mask's width).
    """
    check_choice("loss_type", loss_type, LOSS_TYPES)
    lengths = response_mask.to(torch.float32).sum(dim=1)
    n = lengths.numel()
    if loss_type == "seq_sum":
        return torch.ones_like(lengths)
    if loss_type == "grpo":
        return 1.0 / lengths.clamp(min=1.0)
    if loss_type in ("bnpo", "dapo"):
        return torch.full_like(lengths, n / max(float(lengths.sum()), 1.0))
    width = response_mask.shape[1] if max_completion_length is None else max_completion_length
    check_positive_int("max_completion_length", width)
    return torch.full_like(lengths, 1.0 / width)


def policy_gradient_loss(
    logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    loss_type: LossType = "seq_sum",
    max_completion_length: int | None = None,
) -> Tensor:
    """On-policy policy-gradient loss ``-(1/N) Σ_i c_i A_i Σ_t m_it log π_it`` (TRL aggregations).

    With one on-policy step (TRL's ``num_iterations=1``) the importance ratio is 1 and PPO's
    clipping is inactive, so this has the same gradient as TRL's clipped loss for the same
    ``loss_type``. Like TRL's, its value is ≈ 0 when advantages are centred; the gradient is not.

    Args:
        logprobs: ``[N, T]`` per-token log-probs (from :func:`token_logprobs`).
        advantages: ``[N]`` advantages (detached).
        response_mask: ``[N, T]``, 1 on response tokens.
        loss_type: ``"seq_sum"`` (default), ``"grpo"``, ``"bnpo"``, ``"dapo"`` or ``"dr_grpo"``.
        max_completion_length: The constant of ``dr_grpo`` (default: ``T``).

    Returns:
        A scalar loss.
    """
    _check_response_mask(response_mask, logprobs.shape)
    if advantages.shape != (logprobs.shape[0],):
        raise ValueError(
            f"advantages must have shape [{logprobs.shape[0]}], got {tuple(advantages.shape)}"
        )
    check_finite("advantages", advantages)
    mask = response_mask.to(logprobs.dtype)
    coef = loss_coefficients(response_mask, loss_type, max_completion_length=max_completion_length)
    seq = (logprobs * mask).sum(dim=1)
    return -(coef.to(seq.dtype) * advantages.detach().to(seq.dtype) * seq).mean()


def _loss_from_coef(tok_logps: Tensor, adv: Tensor, resp: Tensor, coef: Tensor) -> Tensor:
    seq = (tok_logps * resp.to(tok_logps.dtype)).sum(dim=1)
    return -(coef.to(seq.dtype) * adv.to(seq.dtype) * seq).mean()
