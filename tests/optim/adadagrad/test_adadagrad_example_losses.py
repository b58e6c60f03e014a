"""Per-example losses for the ghost statistics: one ``reduction="none"`` call for the stock torch
losses equals ``loss_fn(out[i:i+1], y[i:i+1])`` (the ``torch.func.vmap`` path) for every
recognised loss and configuration, including class weights, ``ignore_index`` and label
smoothing (two of which ``vmap`` cannot run at all: weighted label smoothing); everything else
falls back to ``vmap`` and still gives the per-example statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optforge.optim.adadagrad.ghost as ghost_module
from optforge.optim.adadagrad import batch_grad_stats
from optforge.optim.adadagrad.example_losses import per_example_losses

F64 = torch.float64
B, C, T = 6, 4, 3


def _data():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(B, C, dtype=F64, generator=g)
    seq = torch.randn(B, C, T, dtype=F64, generator=g)
    labels = torch.randint(0, C, (B,), generator=g)
    labels[1] = -100  # an ignored example (NaN on its own)
    seq_labels = torch.randint(0, C, (B, T), generator=g)
    seq_labels[0, 1] = 2  # ignored (ignore_index=2 below)
    seq_labels[2, :] = 2  # ignore_index=2 below: an example with every target ignored
    probs = torch.softmax(torch.randn(B, C, T, dtype=F64, generator=g), dim=1)
    target = torch.rand(B, C, dtype=F64, generator=g)
    weight = torch.rand(C, dtype=F64, generator=g) + 0.5
    return out, seq, labels, seq_labels, probs, target, weight


def _cases():
    out, seq, labels, seq_labels, probs, target, weight = _data()
    sig = torch.sigmoid(out)
    return {
        "mse": (nn.MSELoss(), out, target),
        "mse_sum": (nn.MSELoss(reduction="sum"), out, target),
        "mse_1d": (nn.MSELoss(), out[:, 0], target[:, 0]),
        "l1": (nn.L1Loss(), seq, probs),
        "smooth_l1": (nn.SmoothL1Loss(beta=0.5), out, target),
        "huber": (nn.HuberLoss(delta=0.3), out, target),
        "bce": (nn.BCELoss(weight=weight), sig, target),
        "bce_logits": (nn.BCEWithLogitsLoss(pos_weight=weight), out, target),
        "ce": (nn.CrossEntropyLoss(), out, labels),
        "ce_weight_smoothing": (
            nn.CrossEntropyLoss(weight=weight, label_smoothing=0.2), out, labels,
        ),
        "ce_seq_ignore": (nn.CrossEntropyLoss(ignore_index=2), seq, seq_labels),
        "ce_seq_weight_smoothing": (
            nn.CrossEntropyLoss(weight=weight, ignore_index=2, label_smoothing=0.1),
            seq, seq_labels,
        ),
        "ce_seq_sum": (nn.CrossEntropyLoss(weight=weight, reduction="sum"), seq, seq_labels),
        "ce_probs": (nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1), seq, probs),
        "nll_seq": (nn.NLLLoss(weight=weight, ignore_index=2), seq.log_softmax(1), seq_labels),
        "F.mse_loss": (F.mse_loss, out, target),
        "F.cross_entropy": (F.cross_entropy, out, labels),
        "F.nll_loss": (F.nll_loss, out.log_softmax(1), labels),
        "F.binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, out, target),
        "F.smooth_l1_loss": (F.smooth_l1_loss, out, target),
    }  # fmt: skip


_VMAP_CANNOT = {"ce_weight_smoothing", "ce_seq_weight_smoothing"}


def _one_by_one(loss_fn, out, y):
    return torch.stack([loss_fn(out[i : i + 1], y[i : i + 1]) for i in range(out.shape[0])])


@pytest.mark.parametrize("name", list(_cases()))
def test_stock_losses_in_one_call_equal_the_vmap_path(name):
    loss_fn, out, y = _cases()[name]
    fast = per_example_losses(out, y, loss_fn)
    assert fast is not None and fast.shape == (out.shape[0],)
    if name in _VMAP_CANNOT:  # torch's weighted label smoothing uses masked_select
        with pytest.raises(RuntimeError, match="vmap"):
            ghost_module._PER_EXAMPLE_LOSSES(out, y, loss_fn)
    else:
        vmapped = ghost_module._PER_EXAMPLE_LOSSES(out, y, loss_fn)
        torch.testing.assert_close(fast, vmapped, rtol=1e-12, atol=1e-14, equal_nan=True)
    torch.testing.assert_close(fast, _one_by_one(loss_fn, out, y), rtol=1e-12, atol=1e-14,
                               equal_nan=True)  # fmt: skip
    if "ignore" in name or name in ("ce", "F.cross_entropy", "F.nll_loss"):
        assert fast.isnan().any()  # the example whose targets are all ignored


class _MyMSE(nn.MSELoss):
    def forward(self, a, b):
        return super().forward(a, b) * 2


def _fallbacks():
    out, seq, labels, _, _, target, _ = _data()
    hooked = nn.MSELoss()
    hooked.register_forward_hook(lambda m, i, o: o * 3)
    return {
        "subclass": (_MyMSE(), out, target),
        "module_with_hook": (hooked, out, target),
        "lambda": (lambda a, b: F.mse_loss(a, b), out, target),
        "broadcast_shapes": (nn.MSELoss(), out[:, :1], target[:, 0]),
        "bce_weight_per_batch_row": (nn.BCEWithLogitsLoss(weight=target), out, target),
        "ce_unbatched_1d": (nn.CrossEntropyLoss(), out[:, 0], labels.clamp_min(0)),
        "ce_wrong_target_shape": (nn.CrossEntropyLoss(), seq, labels),
    }


@pytest.mark.parametrize("name", list(_fallbacks()))
def test_other_losses_and_shapes_take_the_vmap_path(name):
    loss_fn, out, y = _fallbacks()[name]
    assert per_example_losses(out, y, loss_fn) is None


@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize("name", ["subclass", "module_with_hook", "lambda", "broadcast_shapes"])
def test_fallback_statistics_equal_the_per_example_ones(name):
    loss_fn, _, _ = _fallbacks()[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(F64)
    x = torch.randn(B, 3, dtype=F64)
    y = torch.randn(B, dtype=F64) if name == "broadcast_shapes" else torch.randn(B, 1, dtype=F64)
    ghost, loss_g = batch_grad_stats(model, loss_fn, x, y, inner_product=True, method="ghost")
    exact, loss_e = batch_grad_stats(model, loss_fn, x, y, inner_product=True)
    tol = {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(loss_g, loss_e, **tol)
    for key in ("trace_variance", "grad_sq_norm", "ip_variance"):
        torch.testing.assert_close(getattr(ghost, key), getattr(exact, key), **tol, msg=key)


def _boom(*args, **kwargs):
    raise AssertionError("the vmap path ran")


@pytest.mark.parametrize(
    ("loss_fn", "target"),
    [
        (nn.CrossEntropyLoss(label_smoothing=0.1), "labels"),
        (F.cross_entropy, "labels"),
        (nn.MSELoss(), "values"),
    ],
)
def test_stock_losses_skip_vmap_and_keep_the_statistics(monkeypatch, loss_fn, target):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(F64)
    x = torch.randn(B, 3, dtype=F64)
    y = torch.randint(0, 2, (B,)) if target == "labels" else torch.randn(B, 2, dtype=F64)
    exact, loss_e = batch_grad_stats(model, loss_fn, x, y, inner_product=True)
    monkeypatch.setattr(ghost_module, "_PER_EXAMPLE_LOSSES", _boom)
    ghost, loss_g = batch_grad_stats(model, loss_fn, x, y, inner_product=True, method="ghost")
    tol = {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(loss_g, loss_e, **tol)
    torch.testing.assert_close(ghost.mean, exact.mean, **tol)
    for key in ("trace_variance", "grad_sq_norm", "ip_variance", "orth_trace_variance"):
        torch.testing.assert_close(getattr(ghost, key), getattr(exact, key), **tol, msg=key)
