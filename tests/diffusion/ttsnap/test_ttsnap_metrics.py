"""Metrics: relative area gain closed forms and alignment of perfect and reversed scores."""

from __future__ import annotations

import pytest
import torch

from optforge.diffusion.ttsnap import alignment_metrics, relative_area_gain


def test_relative_area_gain_closed_forms():
    b = torch.linspace(200.0, 1000.0, 9)
    r = (b - 200.0) / 800.0  # area above r(B_min) = 800 / 2 = 400
    assert relative_area_gain(b, r, r) == pytest.approx(0.0, abs=1e-12)
    delta = 0.1
    assert relative_area_gain(b, r + delta, r) == pytest.approx(100 * delta * 800 / 400)
    assert relative_area_gain(b, 2 * r, r) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="not positive"):
        relative_area_gain(b, r, torch.zeros(9))


def test_alignment_metrics_perfect_and_reversed():
    gen = torch.Generator().manual_seed(0)
    final = torch.randn(5, 60, generator=gen)
    perfect = alignment_metrics(final, final)
    assert perfect["kendall"] == pytest.approx(1.0)
    assert perfect["top_acc"] == 1.0 and perfect["top_acc@0.25"] == 1.0
    assert perfect["top_gap"] == 0.0 and perfect["mse"] == 0.0
    worst = alignment_metrics(-final, final, alphas=[0.05])
    assert worst["kendall"] == pytest.approx(-1.0)
    assert worst["top_acc"] == 0.0 and worst["top_gap"] > 0
