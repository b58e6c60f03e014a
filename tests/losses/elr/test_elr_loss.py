"""ELRLoss and its functional core (optforge.losses.elr.loss)."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optforge.losses import (
    ELRLoss,
    elr_regularizer,
    update_ema_targets_,
)

EPS = 1e-4


def _np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_elr_step(z, y, T, idx, lam, beta, eps=EPS):
    """Reference: clamp, normalise, EMA update, then CE + λ mean log(1 - <p, t>)."""
    p = np.clip(_np_softmax(z), eps, 1 - eps)
    T = T.copy()
    T[idx] = beta * T[idx] + (1 - beta) * p / p.sum(axis=1, keepdims=True)
    log_softmax = z - z.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    ce = -log_softmax[np.arange(len(y)), y].mean()
    reg = np.log(1 - (T[idx] * p).sum(axis=1)).mean()
    return ce + lam * reg, T


def test_closed_form_value_over_two_steps():
    z1 = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 0.0]])
    z2 = np.array([[1.0, 0.0, 0.5], [0.3, -0.2, 2.0], [-1.0, 2.5, 0.2]])
    y = np.array([0, 1, 1])
    idx = np.array([4, 0, 2])
    loss = ELRLoss(5, 3, lam=3.0, beta=0.7)
    T = np.zeros((5, 3))
    for z in (z1, z2):
        expected, T = _np_elr_step(z, y, T, idx, 3.0, 0.7)
        got = loss(torch.tensor(z, dtype=torch.float64), torch.tensor(y), torch.tensor(idx))
        assert got.item() == pytest.approx(expected, abs=1e-6)
        np.testing.assert_allclose(loss.targets.numpy(), T, atol=1e-6)


def test_reduction_none_and_sum():
    torch.manual_seed(1)
    z, y, idx = torch.randn(4, 3), torch.tensor([0, 2, 1, 1]), torch.tensor([3, 1, 0, 2])
    a, b, c = (ELRLoss(4, 3, lam=2.0, reduction=r) for r in ("none", "sum", "mean"))
    per = a(z, y, idx)
    assert per.shape == (4,)
    assert b(z, y, idx).item() == pytest.approx(per.sum().item(), rel=1e-6)
    assert c(z, y, idx).item() == pytest.approx(per.mean().item(), rel=1e-6)


def test_target_update_order_and_momentum():
    torch.manual_seed(0)
    z, y, idx = torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([2, 0, 5])
    loss = ELRLoss(6, 4, lam=1.0, beta=0.6)
    p = F.softmax(z, 1).clamp(EPS, 1 - EPS)
    p_hat = p / p.sum(1, keepdim=True)
    loss(z, y, idx)
    torch.testing.assert_close(loss.targets[idx], 0.4 * p_hat, rtol=0, atol=1e-7)
    loss(z, y, idx)
    torch.testing.assert_close(loss.targets[idx], 0.4 * 1.6 * p_hat, rtol=0, atol=1e-7)
    untouched = torch.tensor([1, 3, 4])
    assert torch.all(loss.targets[untouched] == 0)


def test_index_semantics_only_rows_of_the_batch_change():
    loss = ELRLoss(8, 3)
    loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([5, 2]))
    changed = (loss.targets.abs().sum(1) > 0).nonzero().squeeze(1).tolist()
    assert changed == [2, 5]


def test_duplicate_indices_warn():
    loss = ELRLoss(4, 3)
    with pytest.warns(UserWarning, match="duplicates"):
        loss(torch.randn(2, 3), torch.tensor([1, 2]), torch.tensor([3, 3]))


def test_update_targets_follows_training_mode():
    loss = ELRLoss(4, 3)
    loss.eval()
    loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert torch.all(loss.targets == 0)
    loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), update_targets=True)
    assert loss.targets.sum() > 0


def test_gradcheck_regularizer_float64():
    torch.manual_seed(0)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1) * 0.8

    def reg(logits):
        return elr_regularizer(F.softmax(logits, 1).clamp(EPS, 1 - EPS), t)

    assert torch.autograd.gradcheck(reg, (z,))


def test_regularizer_gradient_matches_analytic():
    torch.manual_seed(3)
    z = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(2 * torch.randn(5, 6, dtype=torch.float64), 1) * 0.9
    p = F.softmax(z, 1)
    elr_regularizer(p.clamp(EPS, 1 - EPS), t).sum().backward()
    p = p.detach()
    s = (p * t).sum(1, keepdim=True)
    analytic = p * (s - t) / (1 - s)
    torch.testing.assert_close(z.grad, analytic, rtol=1e-10, atol=1e-12)


def test_module_gradient_is_ce_plus_lambda_g_with_frozen_targets():
    torch.manual_seed(4)
    loss = ELRLoss(5, 4, lam=2.5, beta=0.7)
    loss(torch.randn(5, 4), torch.arange(4).repeat(2)[:5], torch.arange(5))  # fill targets
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    loss(z, y, torch.arange(5), update_targets=False).backward()
    p = F.softmax(z.detach(), 1)
    t = loss.targets.double()
    s = (p * t).sum(1, keepdim=True)
    expected = (p - F.one_hot(y, 4) + 2.5 * p * (s - t) / (1 - s)) / 5
    torch.testing.assert_close(z.grad, expected, rtol=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(
        lambda zz: loss(zz, y, torch.arange(5), update_targets=False),
        (z.detach().requires_grad_(),),
    )


def test_clamp_zeroes_gradient_and_keeps_loss_finite():
    loss = ELRLoss(2, 3, lam=3.0, beta=0.0)
    z = torch.tensor([[60.0, -60.0, -60.0], [0.0, 80.0, -80.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    for _ in range(3):  # p ≈ t ≈ one-hot: unclamped log(1 - <p,t>) would be -inf
        value = loss(z, y, torch.tensor([0, 1]))
        assert torch.isfinite(value)
    reg = elr_regularizer(F.softmax(z, 1).clamp(EPS, 1 - EPS), loss.targets)
    assert torch.isfinite(reg).all()
    z.grad = None
    reg.sum().backward()
    assert torch.all(z.grad == 0)  # every coordinate is clamped: zero gradient (official code)


def test_no_gradient_through_targets():
    torch.manual_seed(5)
    loss = ELRLoss(4, 3)
    loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert not loss.targets.requires_grad
    z = torch.randn(4, 3, requires_grad=True)
    y, idx = torch.tensor([0, 1, 2, 0]), torch.arange(4)
    clone = copy.deepcopy(loss)
    loss(z, y, idx).backward()
    g1 = z.grad.clone()
    z.grad = None
    clone(z, y, idx).backward()
    torch.testing.assert_close(z.grad, g1, rtol=0, atol=0)
    assert loss.targets.grad is None


def test_lambda_zero_is_cross_entropy():
    torch.manual_seed(6)
    z1 = torch.randn(6, 5, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_()
    y = torch.randint(0, 5, (6,))
    a = ELRLoss(10, 5, lam=0.0)(z1, y, torch.arange(6))
    b = F.cross_entropy(z2, y)
    a.backward()
    b.backward()
    assert a.item() == pytest.approx(b.item(), abs=1e-7)
    torch.testing.assert_close(z1.grad, z2.grad)


def test_soft_labels_and_ce_options_match_cross_entropy():
    torch.manual_seed(7)
    z = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), 1)
    w = torch.tensor([1.0, 2.0, 0.5])
    got = ELRLoss(4, 3, lam=0.0, ce_weight=w, label_smoothing=0.1)(z, soft, torch.arange(4))
    assert got.item() == pytest.approx(
        F.cross_entropy(z, soft, weight=w, label_smoothing=0.1).item(), rel=1e-6
    )


def test_beta_zero_closed_form():
    torch.manual_seed(8)
    z, y = torch.randn(3, 4, dtype=torch.float64), torch.tensor([1, 0, 3])
    p = F.softmax(z, 1).clamp(EPS, 1 - EPS)
    p_hat = p / p.sum(1, keepdim=True)
    expected = F.cross_entropy(z, y) + 2.0 * torch.log(1 - (p_hat * p).sum(1)).mean()
    got = ELRLoss(3, 4, lam=2.0, beta=0.0)(z, y, torch.arange(3))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_state_dict_round_trip_resumes_exactly():
    def make():
        torch.manual_seed(11)
        model = nn.Linear(5, 3)
        return model, torch.optim.SGD(model.parameters(), lr=0.5), ELRLoss(20, 3, lam=3.0)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 5, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    batches = [torch.randperm(20, generator=gen)[:6] for _ in range(8)]

    def step(model, opt, crit, idx):
        value = crit(model(x[idx]), y[idx], idx)
        opt.zero_grad()
        value.backward()
        opt.step()
        return value.item()

    m1, o1, c1 = make()
    straight = [step(m1, o1, c1, b) for b in batches]
    m2, o2, c2 = make()
    for b in batches[:4]:
        step(m2, o2, c2, b)
    saved = copy.deepcopy((m2.state_dict(), o2.state_dict(), c2.state_dict()))
    m3, o3, c3 = make()
    m3.load_state_dict(saved[0])
    o3.load_state_dict(saved[1])
    c3.load_state_dict(saved[2])
    assert "targets" in saved[2]
    resumed = [step(m3, o3, c3, b) for b in batches[4:]]
    assert resumed == straight[4:]


def test_dtype_and_autocast():
    loss = ELRLoss(4, 3).to(torch.float64)
    assert loss.targets.dtype == torch.float64  # .to(dtype) follows nn.Module semantics
    loss = ELRLoss(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = nn.Linear(2, 3)(torch.randn(4, 2))
        assert z.dtype == torch.bfloat16
        value = loss(z, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert loss.targets.dtype == torch.float32
    value16 = ELRLoss(4, 3)(torch.randn(4, 3).half(), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert value16.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": -1.0}, "lam"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"clamp_eps": 0.0}, "clamp_eps"),
        ({"reduction": "avg"}, "reduction"),
        ({"num_examples": 0}, "num_examples"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    args = {"num_examples": 4, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        ELRLoss(**args)


def test_bad_inputs():
    loss = ELRLoss(4, 3)
    z, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(IndexError, match="num_examples"):
        loss(z, y, torch.tensor([0, 4]))
    with pytest.raises(IndexError, match="num_examples"):
        loss(z, y, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="index must have shape"):
        loss(z, y, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="index is required"):
        loss(z, y, None)
    with pytest.raises(TypeError, match="index"):
        loss(z, y, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="target: every value"):
        loss(z, torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        loss(torch.randn(2, 4), y, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits contains"):
        loss(torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]), y, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must have shape"):
        loss.suspected_noisy(torch.zeros(3, dtype=torch.long))
    assert torch.all(loss.targets == 0)  # failed calls leave the buffer untouched


def test_detection_utilities():
    loss = ELRLoss(4, 3, beta=0.0)
    z = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    loss(z, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    given = torch.tensor([0, 2, 2, 1])
    assert loss.predicted_labels()[:3].tolist() == [0, 1, 2]
    assert loss.suspected_noisy(given).tolist() == [False, True, False, False]  # row 3 unseen
    loss.reset_targets()
    assert torch.all(loss.targets == 0)


def test_update_ema_targets_functional_and_beta_check():
    buf = torch.zeros(3, 2)
    update_ema_targets_(buf, torch.tensor([2]), torch.tensor([[0.2, 0.6]]), 0.5)
    torch.testing.assert_close(buf[2], torch.tensor([0.125, 0.375]))
    with pytest.raises(ValueError, match="beta"):
        update_ema_targets_(buf, torch.tensor([2]), torch.tensor([[0.2, 0.6]]), 1.0)


def test_no_warning_in_plain_use():
    loss = ELRLoss(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.arange(4))


# ------------------------------------------------------------------ reproduction code paths


def test_reproduction_full_scale_path_runs_tiny(tmp_path):
    """The GPU-scale code path (Gaussian mixture, SGD, ELR+ arm) on a tiny config."""
    from optforge.repro.papers.elr import CONFIGS, METHODS

    configs, methods = CONFIGS, METHODS
    tiny = {
        **configs["full"],
        "n_train": 200,
        "n_test": 100,
        "dim": 8,
        "num_classes": 4,
        "width": 16,
        "depth": 2,
        "batch_size": 50,
        "epochs": 2,
        "eval_every": 1,
        "ema_ramp_steps": 4,
    }
    for arm in ("elr/sym", "ce/asym", "elr+/sym"):
        out = methods[arm](tiny, 0, "cpu")
        assert 0.0 <= out["test_acc"] <= 1.0
        assert out["epoch"] == [1.0, 2.0]
        assert 0.5 < out["bayes_acc"] <= 1.0
        assert out["noise_rate"] == pytest.approx(
            0.6 if arm.split("/")[1] == "sym" else 0.4, abs=0.01
        )


# -- issue 24: soft labels are checked; a failing call leaves the target buffer untouched ----
@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (torch.tensor([[float("nan"), 0.5, 0.5], [1.0, 0.0, 0.0]]), ValueError, "target"),
        (torch.tensor([[2.0, -1.0, 0.0], [1.0, 0.0, 0.0]]), ValueError, "target"),
        (torch.zeros(2, 3, dtype=torch.long), TypeError, "soft-label target"),
        (torch.tensor([0, 1], device="meta"), ValueError, "target"),
    ],
)
def test_bad_soft_labels_are_named_and_leave_the_buffer(target, error, match):
    loss = ELRLoss(4, 3)
    with pytest.raises(error, match=match):
        loss(torch.randn(2, 3), target, torch.tensor([0, 1]))
    assert torch.all(loss.targets == 0)


def test_update_ema_targets_checks_its_index():
    buffer = torch.zeros(4, 3)
    with pytest.raises(IndexError, match="index"):
        update_ema_targets_(buffer, torch.tensor([0, 4]), torch.full((2, 3), 1 / 3), 0.5)
    with pytest.raises(ValueError, match="probs"):
        update_ema_targets_(buffer, torch.tensor([0, 1]), torch.full((3, 3), 1 / 3), 0.5)
    assert torch.all(buffer == 0)
