"""WTACRSLinear (spec §7.2, 5-11): exactness, the sampled ∇W, modes, shared samples."""

import math

import pytest
import torch
from torch import nn

from optforge.nn import SampleShare, WTACRSLinear, WTACRSLinearFunction, saved_tensor_bytes
from optforge.nn.wta_crs import sample_rows, sample_size


def test_layer_weight_gradient_unbiased():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    x = x * torch.exp(torch.randn(64, 1, generator=g, dtype=torch.float64))
    gy = torch.randn(64, 5, generator=g, dtype=torch.float64)
    layer = WTACRSLinear(8, 5, ratio=0.25, min_k=1, generator=5, dtype=torch.float64)
    exact = gy.T @ x
    draws = 3000
    grads = []
    for _ in range(draws):
        layer.weight.grad = None
        layer(x).backward(gy)
        grads.append(layer.weight.grad.clone())
    grads = torch.stack(grads)
    z = (grads.mean(0) - exact) / (grads.std(0) / math.sqrt(draws)).clamp_min(1e-12)
    assert z.abs().max() < 4.0  # 40 entries
    assert grads.std(0).max() > 0  # it really is stochastic


@pytest.mark.parametrize("shape", [(37, 12), (3, 11, 12), (2, 3, 5, 12)])
def test_forward_and_input_bias_grads_bit_equal(shape):
    torch.manual_seed(0)
    ref = nn.Linear(12, 7, dtype=torch.float64)
    layer = WTACRSLinear.from_linear(ref, ratio=0.3, min_k=2)
    x = torch.randn(*shape, dtype=torch.float64)
    gy = torch.randn(*shape[:-1], 7, dtype=torch.float64)
    outs = {}
    for name, module in (("ref", ref), ("wta", layer)):
        module.zero_grad()
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(gy)
        outs[name] = (y.detach(), xi.grad, module.bias.grad.clone(), module.weight.grad.clone())
    assert torch.equal(outs["ref"][0], outs["wta"][0])
    assert torch.equal(outs["ref"][1], outs["wta"][1])
    assert torch.equal(outs["ref"][2], outs["wta"][2])
    assert not torch.equal(outs["ref"][3], outs["wta"][3])


@pytest.mark.parametrize("config", [{"ratio": 1.0}, {"ratio": 0.1, "min_k": 100}])
def test_full_ratio_equals_nn_linear(config):
    ref = nn.Linear(6, 4, dtype=torch.float64)
    layer = WTACRSLinear.from_linear(nn.Linear(6, 4, dtype=torch.float64), **config)
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(5, 9, 6, dtype=torch.float64)
    for m in (ref, layer):
        m(x).pow(2).sum().backward()
    assert torch.equal(ref.weight.grad, layer.weight.grad)
    assert torch.equal(ref.bias.grad, layer.bias.grad)


def test_weight_gradient_matches_slow_reference():
    x = torch.randn(4, 10, 6, dtype=torch.float64)
    gy = torch.randn(4, 10, 3, dtype=torch.float64)
    layer = WTACRSLinear(6, 3, ratio=0.3, min_k=1, generator=11, dtype=torch.float64)
    state = layer.generator.get_state()
    layer(x).backward(gy)
    rows, grads = x.reshape(-1, 6), gy.reshape(-1, 3)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    k = sample_size(40, 0.3, 1)
    idx, w = sample_rows(rows, k, generator=gen)
    ref = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(k):
        ref += float(w[t]) * torch.outer(grads[idx[t]], rows[idx[t]])
    torch.testing.assert_close(layer.weight.grad, ref, rtol=1e-6, atol=1e-12)


def test_gradcheck_input_and_bias():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    idx, weights = sample_rows(x.detach(), 3)
    rows = x.detach()[idx]

    def fn(x, b):
        return WTACRSLinearFunction.apply(x, w, b, idx, weights, rows, None)

    assert torch.autograd.gradcheck(fn, (x, b))


def test_eval_no_grad_frozen_sample_nothing():
    layer = WTACRSLinear(8, 4, ratio=0.2, min_k=1, generator=0)
    ref = layer.to_linear()
    x = torch.randn(50, 8)
    state = layer.generator.get_state()
    cases = []
    layer.eval()
    cases.append((layer(x), ref(x)))
    layer.train()
    with torch.no_grad():
        cases.append((layer(x), ref(x)))
    layer.weight.requires_grad_(False)
    xg = x.clone().requires_grad_()
    params = list(layer.parameters())
    assert saved_tensor_bytes(lambda: layer(xg).sum(), exclude=params) == saved_tensor_bytes(
        lambda: ref(xg).sum(), exclude=params
    )
    for a, b in cases:
        assert torch.equal(a, b)
    assert torch.equal(layer.generator.get_state(), state)


def test_dtypes_noncontiguous_zero_rows_tiny_inputs():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        layer = WTACRSLinear(8, 4, ratio=0.3, min_k=1, dtype=dtype)
        x = torch.randn(20, 8, dtype=dtype)
        x[3] = 0
        layer(x).float().sum().backward()
        assert layer.weight.grad.dtype == dtype and torch.isfinite(layer.weight.grad).all()
    layer = WTACRSLinear(8, 4, ratio=0.3, min_k=1)
    xt = torch.randn(8, 30).t()  # non-contiguous (30, 8)
    torch.testing.assert_close(layer(xt), layer.to_linear()(xt.contiguous()))
    layer(xt).sum().backward()
    layer(torch.zeros(30, 8)).sum().backward()  # all-zero input: no NaN
    assert torch.isfinite(layer.weight.grad).all()
    layer = WTACRSLinear(8, 4, ratio=0.3, min_k=10)
    for n in (1, 5):  # N = 1 and N < min_k: exact
        layer.zero_grad()
        x = torch.randn(n, 8)
        layer(x).sum().backward()
        torch.testing.assert_close(layer.weight.grad, torch.ones(4, n) @ x)


def test_saved_bytes_single_layer():
    n, d_in, ratio = 4096, 64, 0.3
    layer = WTACRSLinear(d_in, 32, ratio=ratio)
    x = torch.randn(n, d_in)
    params = list(layer.parameters())
    k = sample_size(n, ratio, 10)
    got = saved_tensor_bytes(lambda: layer(x).sum(), exclude=params)
    assert got <= (ratio + 0.02) * n * d_in * 4 + k * (8 + 4)
    full = saved_tensor_bytes(lambda: layer.to_linear()(x).sum(), exclude=params)
    assert full == n * d_in * 4


def test_siblings_share_one_sample_and_one_stored_copy():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 32)
    share = SampleShare()
    layers = [WTACRSLinear(32, 16, ratio=0.3, share=share) for _ in range(3)]
    alone = [WTACRSLinear.from_linear(layer, ratio=0.3) for layer in layers]
    params = [p for m in layers for p in m.parameters()]

    def loss(mods):  # sum saves nothing: saved bytes are the layers' own
        return sum(m(x).sum() for m in mods)

    shared_bytes = saved_tensor_bytes(lambda: loss(layers), exclude=params)
    alone_bytes = saved_tensor_bytes(lambda: loss(alone), exclude=params)
    one = saved_tensor_bytes(lambda: layers[0](x).sum(), exclude=params)
    assert shared_bytes == one < alone_bytes
    assert share.hits >= 2
    # every layer's gradient is the estimate built from the one shared sample
    for m in layers:
        m.zero_grad()
    state = torch.random.get_rng_state()
    loss(layers).backward()
    torch.random.set_rng_state(state)
    rows = x.reshape(-1, 32)
    idx, w = sample_rows(rows, sample_size(256, 0.3, 10))
    gy = torch.ones(256, 16)
    for m in layers:
        ref = (gy[idx] * w[:, None]).T @ rows[idx]
        torch.testing.assert_close(m.weight.grad, ref, rtol=1e-5, atol=1e-5)


def test_share_misses_on_a_different_or_modified_input():
    share = SampleShare()
    a = WTACRSLinear(8, 8, ratio=0.3, min_k=1, share=share)
    b = WTACRSLinear(8, 8, ratio=0.3, min_k=1, share=share)
    c = WTACRSLinear(8, 8, ratio=0.5, min_k=1, share=share)  # another k
    x = torch.randn(40, 8)
    keep = [a(x), b(x.clone())]  # outputs keep the samples alive; a copy is another input
    assert share.hits == 0
    keep += [b(x), a(x)]
    assert share.hits == 1
    x.add_(1.0)  # in-place change: a new version of the input
    keep += [b(x), a(x)]
    assert share.hits == 2
    keep += [c(x), a(x)]  # another k: no reuse either way
    assert share.hits == 2
    del keep
    a(x)  # the output is dropped: the sample dies with it (the share holds weak references)
    b(x)
    assert share.hits == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="ratio"):
        WTACRSLinear(4, 4, ratio=0.0)
    with pytest.raises(ValueError, match="ratio"):
        WTACRSLinear(4, 4, ratio=1.5)
    with pytest.raises(ValueError, match="min_k"):
        WTACRSLinear(4, 4, min_k=0)
    with pytest.raises(ValueError, match="method"):
        WTACRSLinear(4, 4, method="topk")
    with pytest.raises(ValueError, match="det_ratio"):
        WTACRSLinear(4, 4, det_ratio=1.0)
    with pytest.raises(ValueError, match="det_ratio"):
        WTACRSLinear(4, 4, method="crs", det_ratio=0.5)
    with pytest.raises(TypeError, match="generator"):
        WTACRSLinear(4, 4, generator="seed")
    with pytest.raises(TypeError, match="grad_norm_cache"):
        WTACRSLinear(4, 4, grad_norm_cache=object())
    with pytest.raises(TypeError, match="share"):
        WTACRSLinear(4, 4, share=object())
    layer = WTACRSLinear(4, 4)
    with pytest.raises(ValueError, match="batch dimension"):
        layer(torch.randn(4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="tensor"):
        layer([1.0, 2.0])


def test_state_dict_and_shared_parameters():
    ref = nn.Linear(5, 3)
    layer = WTACRSLinear.from_linear(ref, ratio=0.5)
    assert layer.weight is ref.weight and layer.bias is ref.bias
    assert layer.state_dict().keys() == ref.state_dict().keys()
    other = WTACRSLinear(5, 3)
    other.load_state_dict(ref.state_dict())
    assert torch.equal(other.weight, ref.weight)
    nn.Linear(5, 3).load_state_dict(other.state_dict())
    assert "ratio=0.5" in repr(layer)
    no_bias = WTACRSLinear.from_linear(nn.Linear(5, 3, bias=False), min_k=1)
    no_bias(torch.randn(40, 5)).sum().backward()
    assert no_bias.bias is None and no_bias.weight.grad is not None
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        WTACRSLinear.from_linear(nn.Conv1d(2, 2, 1))


@pytest.mark.parametrize("shared", [False, True])
def test_checkpoint_replays_same_indices(shared):
    torch.manual_seed(0)
    share = SampleShare() if shared else None
    first = WTACRSLinear(8, 16, ratio=0.2, min_k=1, share=share)
    second = WTACRSLinear(8, 16, ratio=0.2, min_k=1, share=share)

    def block(x):
        return torch.tanh(first(x)) * second(x)

    x = torch.randn(64, 8)
    grads = []
    for use_ckpt in (False, True):
        first.zero_grad()
        second.zero_grad()
        torch.manual_seed(1)
        if use_ckpt:
            out = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            out = block(x)
        out.sum().backward()
        grads.append((first.weight.grad.clone(), second.weight.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_double_backward_raises():
    layer = WTACRSLinear(4, 4, ratio=0.3, min_k=1)
    x = torch.randn(30, 4, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
