"""Noise-aware distillation: held-out rank agreement, independent snapshots and fresh optimizers,
a noise-invariant teacher, and trajectory generation."""

from __future__ import annotations

import itertools

import pytest
import torch
from _ttsnap_helpers import _ddim, _reward
from torch import nn

from optforge.diffusion.ttsnap import (
    NoiseAwareDistiller,
    NoiseAwareReward,
    TrajectoryDataset,
    alignment_metrics,
)


def _mixing_dataset(T: int, gen: torch.Generator):
    """Teacher r(x) = x_0; step-s estimates mix the coordinates (the teacher ranks them badly)."""
    d, levels = 4, [3, 2, 1, 0]
    x0 = torch.randn(T, d, generator=gen)
    mats = []
    for s in levels:
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
        mats.append(q * (0.5 + 0.1 * s))
    est = torch.stack([x0 @ m for m in mats], dim=1) + 0.05 * torch.randn(T, 4, d, generator=gen)
    return x0, est, levels


def _teacher() -> nn.Module:
    lin = nn.Linear(4, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        lin.bias.zero_()
    return nn.Sequential(lin, nn.Flatten(0))


@pytest.mark.slow
def test_distillation_reduces_rank_disagreement_on_held_out():
    gen = torch.Generator().manual_seed(0)
    x0, est, levels = _mixing_dataset(1200, gen)
    teacher = _teacher()
    with torch.no_grad():
        targets = teacher(x0)
    train = TrajectoryDataset(est[:1000], targets[:1000], levels)
    distiller = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=150,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=3e-2, weight_decay=0.01),
    )
    snaps = distiller.fit(train, batch_size=100)
    reward = NoiseAwareReward(teacher, snaps)
    held = TrajectoryDataset(est[1000:], targets[1000:], levels)
    with torch.no_grad():
        for s in levels:
            before = alignment_metrics(teacher(held.at(s))[None], held.targets[None])["kendall"]
            after = alignment_metrics(reward(held.at(s), None, s)[None], held.targets[None])
            assert after["kendall"] > before + 0.3
            assert after["kendall"] > 0.8
            h = distiller.history[s]
            assert sum(h[-10:]) < sum(h[:10])  # the loss decreases at every level
    # Steps without a snapshot use the teacher; teacher parameters are untouched.
    assert reward.model_for(7) is teacher
    assert torch.equal(teacher[0].weight, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_distiller_snapshots_are_independent_and_optimizer_reset():
    gen = torch.Generator().manual_seed(1)
    x0, est, levels = _mixing_dataset(300, gen)
    teacher = _teacher()
    ds = TrajectoryDataset(est, teacher(x0).detach(), levels)
    distiller = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=7,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    snaps = distiller.fit(ds, batch_size=64)
    weights = [snaps[s][0].weight for s in levels]
    assert len({id(snaps[s]) for s in levels}) == len(levels)
    for a, b in itertools.pairwise(weights):
        assert a.data_ptr() != b.data_ptr() and not torch.equal(a, b)
    opts = [distiller.optimizers[s] for s in levels]
    assert len({id(o) for o in opts}) == len(levels)
    for o in opts:  # fresh AdamW per level: its step counters saw only that level's 7 steps
        assert all(int(st["step"]) == 7 for st in o.state.values())
        assert o.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 - 0.5 * 7 / 7))
    # Re-fitting with the same seed is deterministic.
    again = NoiseAwareDistiller(
        teacher,
        levels=levels,
        steps_per_level=7,
        optimizer_factory=lambda p: torch.optim.AdamW(p, lr=1e-2),
    ).fit(ds, batch_size=64)
    assert all(torch.equal(again[s][0].weight, snaps[s][0].weight) for s in levels)


def test_distiller_noise_invariant_teacher_stays_put():
    # Reward = image mean; every estimate has the final image's mean -> zero loss, no update.
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(200, 8, generator=gen)
    noise = torch.randn(200, 3, 8, generator=gen)
    est = x0[:, None] + noise - noise.mean(-1, keepdim=True)
    teacher = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        teacher.weight.fill_(1 / 8)
    model = nn.Sequential(teacher, nn.Flatten(0))
    ds = TrajectoryDataset(est, model(x0).detach(), [2, 1, 0])
    distiller = NoiseAwareDistiller(
        model,
        levels=[2, 1, 0],
        steps_per_level=10,
        optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1),
    )
    snaps = distiller.fit(ds, batch_size=50)
    assert max(max(h) for h in distiller.history.values()) < 1e-12
    for s in (2, 1, 0):
        torch.testing.assert_close(snaps[s][0].weight, model[0].weight, atol=1e-7, rtol=0)


def test_trajectory_dataset_generate():
    sampler = _ddim()
    ds = TrajectoryDataset.generate(
        sampler,
        lambda x: _reward(x, None),
        10,
        [0, 5, 19],
        generator=torch.Generator().manual_seed(0),
        batch_size=4,
    )
    assert ds.estimates.shape == (10, 3, 6) and ds.targets.shape == (10,)
    torch.testing.assert_close(ds.targets, _reward(ds.at(19), None))
