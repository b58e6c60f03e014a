"""ELR+: mixup and the ELR+ loss (optforge.losses.elr.plus)."""

import math

import pytest
import torch
import torch.nn.functional as F

from optforge.losses import (
    ELRPlusLoss,
    mixup_batch,
)

EPS = 1e-4


def test_mixup_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3)
    y = F.one_hot(torch.randint(0, 4, (16,)), 4).float()
    for _ in range(20):
        x_mix, y_mix, m, perm = mixup_batch(x, y, 1.0, gen)
        assert 0.5 <= m <= 1.0
        torch.testing.assert_close(y_mix.sum(1), torch.ones(16))
        torch.testing.assert_close(x_mix, m * x + (1 - m) * x[perm])
        assert sorted(perm.tolist()) == list(range(16))
    x0, y0, m0, perm0 = mixup_batch(x, y, 0.0, gen)
    assert x0 is x and y0 is y and m0 == 1.0 and perm0.tolist() == list(range(16))
    again = mixup_batch(x, y, 1.0, torch.Generator().manual_seed(3))
    assert again[2] == mixup_batch(x, y, 1.0, torch.Generator().manual_seed(3))[2]
    with pytest.raises(TypeError, match="generator"):
        mixup_batch(x, y, 1.0, None)
    with pytest.raises(ValueError, match="alpha"):
        mixup_batch(x, y, -1.0, gen)


def test_elr_plus_loss_closed_form():
    torch.manual_seed(9)
    loss = ELRPlusLoss(6, 3, lam=2.0, beta=0.7, coef_ramp_steps=10)
    idx = torch.tensor([4, 1, 0])
    teacher = torch.randn(3, 3)
    perm, m = torch.tensor([2, 0, 1]), 0.8
    with pytest.raises(RuntimeError, match="update_targets"):
        loss(torch.randn(3, 3), torch.ones(3, 3) / 3)
    q = loss.update_targets(idx, teacher, perm, m)
    t = 0.3 * F.softmax(teacher, 1)
    torch.testing.assert_close(loss.targets[idx], t)
    torch.testing.assert_close(q, m * t + (1 - m) * t[perm])
    z = torch.randn(3, 3)
    y_mix = torch.softmax(torch.randn(3, 3), 1)
    ce = -(y_mix * F.log_softmax(z, 1)).sum(1).mean()
    reg = torch.log(1 - (F.softmax(z, 1).clamp(EPS, 1 - EPS) * q).sum(1)).mean()
    got = loss(z, y_mix, step=5)
    assert got.item() == pytest.approx((ce + math.exp(-5 * 0.25) * 2.0 * reg).item(), rel=1e-6)
    rew = ELRPlusLoss(6, 3, lam=0.0, reweight_labels=True)
    q2 = rew.update_targets(idx, teacher)
    labels = y_mix * q2 / (y_mix * q2).sum(1, keepdim=True)
    assert rew(z, y_mix).item() == pytest.approx(
        -(labels * F.log_softmax(z, 1)).sum(1).mean().item(), rel=1e-6
    )
