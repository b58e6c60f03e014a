"""Per-example gradients (torch.func) and batch_grad_stats against a slow per-example loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _adadagrad_helpers import _data, _mlp, _np_reference, _slow_per_example
from torch import nn

from optforge.optim import (
    batch_grad_stats,
    per_sample_grads,
)
from optforge.optim.adadagrad import (
    coordinate_norm_test,
    inner_product_test,
    norm_test,
    orthogonality_test,
)


def test_per_sample_grads_mean_equals_autograd_and_closed_form() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 4).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    grads = per_sample_grads(model, F.cross_entropy, x, y)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(grads["weight"].mean(0), model.weight.grad, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(grads["bias"].mean(0), model.bias.grad, rtol=1e-5, atol=1e-12)
    # closed form of softmax regression: dL_i/dW = (p_i - y_i) x_i^T, dL_i/db = p_i - y_i
    with torch.no_grad():
        resid = torch.softmax(model(x), 1) - F.one_hot(y, 4).double()
    torch.testing.assert_close(grads["weight"], resid[:, :, None] * x[:, None, :])
    torch.testing.assert_close(grads["bias"], resid)
    chunked = per_sample_grads(model, F.cross_entropy, x, y, chunk_size=4)
    torch.testing.assert_close(chunked["weight"], grads["weight"])


def test_batch_stats_match_slow_per_example_loop_and_chunking() -> None:
    model = _mlp()
    x, y = _data()
    G = _slow_per_example(model, F.cross_entropy, x, y)
    ref = _np_reference(G.numpy(), 0.5, 0.3, 0.7)
    for chunk in (None, 5):
        stats, loss = batch_grad_stats(
            model, F.cross_entropy, x, y, inner_product=True, chunk_size=chunk
        )
        assert stats.count == 24 and stats.sum.dtype == torch.float64
        assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-10)
        torch.testing.assert_close(stats.mean, G.mean(0))
        torch.testing.assert_close(stats.variance, G.var(0), rtol=1e-9, atol=1e-14)
        assert stats.trace_variance == pytest.approx(ref["S"], rel=1e-9)
        assert norm_test(stats, 0.5) == pytest.approx(ref["norm"], rel=1e-9)
        assert inner_product_test(stats, 0.3) == pytest.approx(ref["ip"], rel=1e-9)
        assert orthogonality_test(stats, 0.7) == pytest.approx(ref["orth"], rel=1e-9)
        assert coordinate_norm_test(stats, 0.5) == pytest.approx(ref["coord"], rel=1e-9)


def test_batchnorm_in_train_mode_raises_and_eval_mode_works() -> None:
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    x, y = _data(8)
    with pytest.raises(ValueError, match="BatchNorm"):
        batch_grad_stats(model, F.cross_entropy, x, y)
    model.eval()
    stats, _ = batch_grad_stats(model, F.cross_entropy, x, y)
    assert stats.count == 8


def test_bad_batches_raise() -> None:
    model = _mlp()
    x, y = _data(6)
    with pytest.raises(ValueError, match="targets"):
        batch_grad_stats(model, F.cross_entropy, x, y[:4])
    with pytest.raises(ValueError, match="inputs"):
        batch_grad_stats(model, F.cross_entropy, x[:0], y[:0])
    with pytest.raises(TypeError, match="inputs"):
        batch_grad_stats(model, F.cross_entropy, x.tolist(), y)
    with pytest.raises(ValueError, match="chunk_size"):
        batch_grad_stats(model, F.cross_entropy, x, y, chunk_size=0)
