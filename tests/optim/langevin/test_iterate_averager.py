"""Tests of IterateAverager: the running mean after a burn-in, against torch's AveragedModel."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn

from optforge.optim import IterateAverager


def test_averager_is_mean_after_burn_in_and_matches_averaged_model():
    gen = torch.Generator().manual_seed(13)
    iterates = [torch.randn(6, generator=gen) for _ in range(30)]
    x = torch.zeros(6)
    avg64 = IterateAverager([x], start_step=10)
    avg32 = IterateAverager([x], start_step=10, dtype=None)
    module = torch.nn.Linear(6, 1, bias=False)
    swa = AveragedModel(module, multi_avg_fn=get_swa_multi_avg_fn())
    avg_mod = IterateAverager(module, start_step=10)
    for t, it in enumerate(iterates):
        x.copy_(it)
        with torch.no_grad():
            module.weight.copy_(it.unsqueeze(0))
        avg64.update()
        avg32.update()
        avg_mod.update()
        if t >= 10:
            swa.update_parameters(module)
    expected = torch.stack(iterates[10:]).double().mean(0)
    torch.testing.assert_close(avg64.average()[0], expected, atol=1e-12, rtol=0)
    assert avg64.n_averaged == 20
    torch.testing.assert_close(avg32.average()[0], swa.module.weight.detach()[0])
    torch.testing.assert_close(avg_mod.average()[0], swa.module.weight.detach())
    normed = avg64.average(normalize=True)[0]
    torch.testing.assert_close(normed, expected / expected.norm())


def test_averager_reset_and_errors():
    x = torch.zeros(3)
    avg = IterateAverager([x], start_step=1)
    with pytest.raises(RuntimeError, match="no iterate"):
        avg.average()
    for v in (1.0, 2.0, 4.0):
        x.fill_(v)
        avg.update()
    assert float(avg.average()[0][0]) == 3.0
    avg.reset()
    x.fill_(10.0)
    avg.update()
    with pytest.raises(RuntimeError):
        avg.average()
    avg.update()
    assert float(avg.average()[0][0]) == 10.0
    with pytest.raises(ValueError, match="start_step"):
        IterateAverager([x], start_step=-1)
    with pytest.raises(ValueError, match="params_or_module"):
        IterateAverager([])
