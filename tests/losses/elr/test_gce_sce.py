"""The GCE and SCE baselines (optforge.losses.elr.baselines)."""

import pytest
import torch
import torch.nn.functional as F

from optforge.losses import (
    GCELoss,
    SCELoss,
)


def test_gce_closed_form_and_limits():
    torch.manual_seed(10)
    z, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    p_y = F.softmax(z, 1)[torch.arange(5), y]
    assert GCELoss(0.7)(z, y).item() == pytest.approx(((1 - p_y**0.7) / 0.7).mean().item())
    assert GCELoss(1.0)(z, y).item() == pytest.approx((1 - p_y).mean().item())  # MAE
    assert GCELoss(1e-6)(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-4)
    with pytest.raises(ValueError, match="q"):
        GCELoss(0.0)


def test_sce_closed_form():
    torch.manual_seed(12)
    z, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    p_y = F.softmax(z, 1)[torch.arange(5), y]
    expected = 0.1 * F.cross_entropy(z, y) + 1.0 * (4.0 * (1 - p_y)).mean()
    assert SCELoss(0.1, 1.0, -4.0)(z, y).item() == pytest.approx(expected.item(), rel=1e-9)
    assert SCELoss(reduction="none")(z, y).shape == (5,)
    with pytest.raises(ValueError, match="log_clamp"):
        SCELoss(log_clamp=0.0)
