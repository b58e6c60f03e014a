"""The inverted hinge loss and gradient ascent (optforge.unlearning.losses)."""

import math

import pytest
import torch

from optforge.unlearning import (
    GradientAscentLoss,
    InvertedHingeLoss,
    gradient_ascent_loss,
    inverted_hinge_loss,
)

pytest.importorskip("transformers")
pytest.importorskip("peft")

from _unlearning_models import batch, tiny_llama


def test_ihl_extreme_values():
    big = 60.0
    logits = torch.tensor([[[big, 0.0, 0.0], [0.0, big, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1]])
    # p_y = 1 -> 1 + 1 - 0 = 2
    assert inverted_hinge_loss(logits, labels, shift=False).item() == pytest.approx(2.0)
    # p_y = 0 with another token at 1 -> 1 + 0 - 1 = 0
    assert inverted_hinge_loss(logits, torch.tensor([[2, 0]]), shift=False).item() == (
        pytest.approx(0.0, abs=1e-12)
    )


def test_ihl_hand_computed_three_classes():
    z = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    p = torch.exp(z) / torch.exp(z).sum()
    # target 0: runner-up among {1, 2} is class 1
    expected = 1 + p[0] - p[1]
    got = inverted_hinge_loss(z.view(1, 1, 3), torch.tensor([[0]]), shift=False)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # target 1 (the argmax): runner-up is class 0
    got = inverted_hinge_loss(z.view(1, 1, 3), torch.tensor([[1]]), shift=False)
    assert got.item() == pytest.approx((1 + p[1] - p[0]).item(), rel=1e-12)


def test_ihl_masking_reductions_and_shift():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7) * 3
    labels = torch.randint(0, 7, (2, 5))
    labels[0, :3] = -100
    per = inverted_hinge_loss(logits, labels, reduction="none")
    assert per.shape == (2, 4)
    mask = labels[:, 1:] != -100
    assert torch.all(per[~mask] == 0)
    assert torch.all((per[mask] >= 0) & (per[mask] <= 2))
    mean = inverted_hinge_loss(logits, labels)
    assert mean.item() == pytest.approx((per.sum() / mask.sum()).item(), rel=1e-6)
    total = InvertedHingeLoss(reduction="sum")(logits, labels)
    assert total.item() == pytest.approx(per.sum().item(), rel=1e-6)
    # shift=True equals the explicitly shifted, unshifted call
    unshifted = inverted_hinge_loss(logits[:, :-1], labels[:, 1:], shift=False, reduction="none")
    torch.testing.assert_close(per, unshifted)
    # reference per-token loop
    p = logits.softmax(-1)
    for b in range(2):
        for t in range(4):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            other = torch.cat([p[b, t, :y], p[b, t, y + 1 :]]).max()
            assert per[b, t].item() == pytest.approx((1 + p[b, t, y] - other).item(), rel=1e-5)


def test_ihl_gradient_matches_closed_form():
    torch.manual_seed(1)
    z = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    loss = inverted_hinge_loss(z, y, shift=False, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    p = z.detach().softmax(-1)
    eye = torch.eye(5, dtype=torch.float64)
    masked = p.clone()
    masked[torch.arange(6), y] = -1.0
    v_star = masked.argmax(-1)
    p_y = p[torch.arange(6), y][:, None]
    p_v = p[torch.arange(6), v_star][:, None]
    expected = p_y * (eye[y] - p) - p_v * (eye[v_star] - p)
    torch.testing.assert_close(grad, expected)


def test_ihl_gradcheck_and_vanishing_gradient():
    torch.manual_seed(2)
    z = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (2, 4))
    assert torch.autograd.gradcheck(lambda x: inverted_hinge_loss(x, labels), (z,))
    # self-limiting: as p_y -> 0 the IHL gradient vanishes; the GA gradient does not
    zz = torch.tensor([[-30.0, 5.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g_ihl,) = torch.autograd.grad(inverted_hinge_loss(zz, y, shift=False), zz)
    (g_ga,) = torch.autograd.grad(gradient_ascent_loss(zz, y, shift=False), zz)
    assert g_ihl[0, 0].abs() < 1e-10  # no push on the (already improbable) target
    assert g_ga[0, 0].abs() > 0.99  # GA keeps pushing with the same force


def test_ga_equals_minus_hf_loss():
    model = tiny_llama()
    b = batch(0)
    out = model(**b)
    ga = GradientAscentLoss()(out.logits, b["labels"])
    assert ga.item() == pytest.approx(-out.loss.item(), rel=1e-5)


def test_loss_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        inverted_hinge_loss(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), -100))
    assert inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), -100), reduction="sum") == 0
    with pytest.raises(ValueError, match="reduction"):
        InvertedHingeLoss(reduction="avg")
    with pytest.raises(TypeError, match="integer"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="labels: every value must lie in"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), 9))


# -- issue 24: no silent inf/NaN, clear messages ---------------------------------------------
@pytest.mark.parametrize("loss_fn", [inverted_hinge_loss, gradient_ascent_loss])
def test_vocabulary_of_one_nan_logits_and_empty_batches_are_named(loss_fn):
    labels = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="vocabulary"):  # before: IHL returned inf
        loss_fn(torch.randn(2, 3, 1), labels)
    nan_logits = torch.randn(2, 3, 4)
    nan_logits[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="logits contains"):  # before: NaN
        loss_fn(nan_logits, labels)
    with pytest.raises(ValueError, match="empty batch"):  # before: "every position equals ..."
        loss_fn(torch.randn(0, 3, 4), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(torch.randn(2, 3, 4), labels.to("meta"))
    with pytest.raises(TypeError, match="logits"):
        loss_fn(torch.zeros(2, 3, 4, dtype=torch.long), labels)


def test_nan_logit_at_an_ignored_position_is_allowed():
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[0, 1, -100, 2]])
    logits[0, 1, :] = float("nan")  # predicts labels[0, 2] = -100 after the shift: ignored
    assert torch.isfinite(inverted_hinge_loss(logits, labels))


def test_margin_of_the_function_is_checked():
    with pytest.raises(ValueError, match="margin"):
        inverted_hinge_loss(
            torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), margin=math.nan
        )
