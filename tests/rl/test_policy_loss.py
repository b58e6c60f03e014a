"""Tests for optforge.rl.policy_loss: the loss aggregations match TRL's."""

from __future__ import annotations

import pytest
import torch

from optforge.rl import loss_coefficients, policy_gradient_loss


def test_loss_types_match_trl_aggregations():
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 6, generator=gen, dtype=torch.float64)
    resp = torch.tensor(
        [[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    )
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    m = resp.double()
    per_tok = -adv[:, None] * logp * m
    expected = {
        "seq_sum": per_tok.sum(1).mean(),
        "grpo": (per_tok.sum(1) / m.sum(1)).mean(),
        "dapo": per_tok.sum() / m.sum(),
        "bnpo": per_tok.sum() / m.sum(),
        "dr_grpo": per_tok.sum() / (4 * 6),
    }
    for loss_type, value in expected.items():
        got = policy_gradient_loss(logp, adv, resp, loss_type=loss_type)
        assert got.item() == pytest.approx(value.item(), rel=1e-6), loss_type
    assert loss_coefficients(resp, "grpo")[2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_type"):
        policy_gradient_loss(logp, adv, resp, loss_type="token")
    with pytest.raises(ValueError, match="advantages must have shape"):
        policy_gradient_loss(logp, adv[:3], resp)
