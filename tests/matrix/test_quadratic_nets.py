"""The quadratic teacher and the gradient-descent baselines (``matrix.quadratic_nets``)."""

import math

import pytest
import torch

from optforge.matrix.quadratic_nets import QuadraticNet, sample_quadratic_teacher, train_gd_ensemble


def test_teacher_shapes_and_label_variance():
    """Spec §7.6: Var(y) ≈ 2‖S°‖²_F/d + Δ ≈ 2(1 + κ) + Δ."""
    gen = torch.Generator().manual_seed(0)
    data = sample_quadratic_teacher(60, 0.5, 2.0, 0.3, generator=gen)
    assert data.X.shape == (7200, 60) and data.W.shape == (30, 60) and data.S.shape == (60, 60)
    expected = 2 * float((data.S**2).sum()) / 60 + 0.3
    assert float(data.y.var()) == pytest.approx(expected, rel=0.05)
    assert expected == pytest.approx(2 * 1.5 + 0.3, rel=0.1)
    # labels are the network's outputs, centred
    net_out = (data.X @ data.W.T / math.sqrt(60)).pow(2).sum(1) / math.sqrt(30)
    resid = data.uncentered_labels() - net_out
    assert float(resid.std()) == pytest.approx(math.sqrt(0.3), rel=0.05)


def test_teacher_bad_inputs():
    with pytest.raises(ValueError, match="kappa"):
        sample_quadratic_teacher(10, 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        sample_quadratic_teacher(10, 0.5, 0.0)
    with pytest.raises(ValueError, match="delta"):
        sample_quadratic_teacher(10, 0.5, 0.5, -0.1)
    with pytest.raises(ValueError, match="too small"):
        sample_quadratic_teacher(4, 0.1, 0.5)
    with pytest.raises(ValueError, match="d"):
        sample_quadratic_teacher(0, 0.5, 0.5)


def test_teacher_is_deterministic_under_a_seed():
    a = sample_quadratic_teacher(10, 0.5, 0.5, generator=torch.Generator().manual_seed(5))
    b = sample_quadratic_teacher(10, 0.5, 0.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)


def test_quadratic_net_matches_teacher():
    data = sample_quadratic_teacher(12, 0.5, 1.0, generator=torch.Generator().manual_seed(0))
    net = QuadraticNet(12, 6, 1)
    with torch.no_grad():
        net.weight.copy_(data.W[None])
    torch.testing.assert_close(net(data.X)[0], data.uncentered_labels())
    net.centered = True
    torch.testing.assert_close(net(data.X)[0], data.y)
    torch.testing.assert_close(net.gram("paper")[0], data.S)
    torch.testing.assert_close(net.gram("standard")[0] * math.sqrt(0.5), data.S)


def test_gd_ensemble_decreases_loss_and_averaging_helps():
    data = sample_quadratic_teacher(16, 0.5, 0.35, generator=torch.Generator().manual_seed(0))
    grams, losses = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=300,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
        return_losses=True,
    )
    assert grams.shape == (6, 16, 16)
    assert torch.all(losses[-1] < 1e-2 * losses[0])
    assert torch.all(losses[10] < losses[0])
    single = float(((grams - data.S) ** 2).sum((-1, -2)).mean() / 16)
    assert data.mse(grams.mean(0)) < single
    # reduction="mean" with lr·n follows the same trajectory
    g2 = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=20,
        lr=0.05 * data.X.shape[0],
        reduction="mean",
        generator=torch.Generator().manual_seed(1),
    )
    g1 = train_gd_ensemble(
        data.X,
        data.uncentered_labels(),
        8,
        6,
        steps=20,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(g1, g2)


def test_gd_ensemble_reports_divergence():
    data = sample_quadratic_teacher(16, 0.5, 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="diverged"):
        train_gd_ensemble(data.X, data.uncentered_labels(), 8, 2, steps=200, lr=5.0)
    with pytest.raises(ValueError, match="optimizer"):
        train_gd_ensemble(data.X, data.uncentered_labels(), 8, 2, steps=2, optimizer="lbfgs")
