"""ModelEMA and the sigmoid ramp (optforge.losses.elr.ema)."""

import copy
import math

import pytest
import torch
from torch import nn

from optforge.losses import (
    ModelEMA,
    sigmoid_rampup,
)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(500, 100) == 1.0


def test_model_ema_schedules_and_convex_combination():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    const = ModelEMA(model, decay=0.9, ramp_steps=0)
    assert [const.decay_at(t) for t in (0, 5, 100)] == [0.9, 0.9, 0.9]
    ramp = ModelEMA(model, decay=0.997, ramp_steps=1000)
    assert ramp.decay_at(0) == pytest.approx(0.997 * math.exp(-5))
    assert ramp.decay_at(2000) == pytest.approx(0.997)
    mean_teacher = ModelEMA(model, decay=0.99, mode="min_1_minus_1_over_t")
    assert [mean_teacher.decay_at(t) for t in (0, 1, 3, 10**6)] == [0.0, 0.5, 0.75, 0.99]

    const.update(model)  # first update copies (AveragedModel convention)
    torch.testing.assert_close(const.module.weight, model.weight)
    before = const.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    const.update(model)
    torch.testing.assert_close(const.module.weight, 0.9 * before + 0.1 * model.weight.detach())
    state = copy.deepcopy(const.state_dict())
    fresh = ModelEMA(nn.Linear(3, 2), decay=0.9, ramp_steps=0)
    fresh.load_state_dict(state)
    assert int(fresh.n_averaged) == 2
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)
    with pytest.raises(ValueError, match="mode"):
        ModelEMA(model, mode="linear")
