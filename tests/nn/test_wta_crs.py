"""Tests for WTA-CRS (spec wta_crs.md §7): sampler, unbiasedness, variance, exactness, modes."""

import math

import pytest
import torch
from torch import nn

from optforge.nn import (
    MaskedReLU,
    WTACRSLinear,
    WTACRSLinearFunction,
    approx_matmul,
    convert_linear,
    convert_relu,
    relu_1bit,
    revert_linear,
    sample_indices,
    saved_tensor_bytes,
)
from optforge.nn.activations import pack_bits, unpack_bits
from optforge.nn.wta_crs import sample_size


def _n_winners(probs, idx, w, k):
    """Number of leading slots holding the top-k entries with weight exactly 1."""
    top = torch.topk(probs / probs.sum(), k).indices
    c = 0
    while c < k and idx[c] == top[c] and w[c] == 1.0:
        c += 1
    return c


def _lognormal_pair(n=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s1 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    s2 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * s1[:, None]
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * s2[:, None]
    return x, y


# --------------------------------------------------------------------------- 1. sampler
def test_sampler_shapes_winners_and_weights():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200, generator=g) ** 6
    for k in (1, 5, 40, 199):
        idx, w = sample_indices(p, k, generator=g)
        assert idx.shape == (k,) and w.shape == (k,)
        assert idx.dtype == torch.int64 and w.dtype == torch.float32
        assert (w > 0).all() and (idx >= 0).all() and (idx < 200).all()
        c = _n_winners(p, idx, w, k)
        if c > 0:  # the paper's condition P_C > |C|/k
            top = torch.topk(p / p.sum(), k).values
            assert float(top[:c].sum()) > c / k
        # winners are the top-|C| and are never drawn again
        assert not set(idx[c:].tolist()) & set(idx[:c].tolist())


def test_sampler_adaptive_rule_cases():
    g = torch.Generator().manual_seed(1)
    uniform = torch.ones(100)
    idx, w = sample_indices(uniform, 10, generator=g)
    assert _n_winners(uniform, idx, w, 10) == 0
    assert torch.allclose(w, torch.full((10,), 10.0))  # 1 / (k · 1/N)
    peaked = torch.full((100,), 0.1 / 99)
    peaked[17] = 0.9
    idx, w = sample_indices(peaked, 2, generator=g)
    assert _n_winners(peaked, idx, w, 2) >= 1 and idx[0] == 17
    # CRS: no winners; fixed det_ratio: floor(k · det_ratio) winners
    idx, w = sample_indices(peaked, 10, adaptive=False, generator=g)
    assert _n_winners(peaked, idx, w, 10) <= 1 and (w != 1.0).all()
    idx, w = sample_indices(torch.rand(100, generator=g), 10, det_ratio=0.55, generator=g)
    assert (w[:5] == 1.0).all() and (w[5:] != 1.0).all()
    assert sample_indices(torch.rand(5), 9)[0].tolist() == [0, 1, 2, 3, 4]


def test_sampler_zero_residual_is_exact():
    x = torch.zeros(6, 10, dtype=torch.float64)
    x[:, 3] = torch.arange(6.0)
    x[:, 7] = 1.0
    y = torch.randn(10, 4, dtype=torch.float64)
    for seed in range(5):
        est = approx_matmul(x, y, 4, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(est, x @ y, rtol=1e-12, atol=1e-12)
    zero = sample_indices(torch.zeros(20), 5)  # all-zero scores fall back to uniform
    assert torch.isfinite(zero[1]).all()


# --------------------------------------------------------------------------- 2. unbiasedness
@pytest.mark.parametrize("method", ["wta", "crs"])
def test_approx_matmul_unbiased_monte_carlo(method):
    g = torch.Generator().manual_seed(3)
    scale = torch.exp(torch.randn(32, generator=g, dtype=torch.float64))
    x = torch.randn(64, 32, generator=g, dtype=torch.float64) * scale
    y = torch.randn(32, 16, generator=g, dtype=torch.float64)
    draws = 4000
    ests = torch.stack([approx_matmul(x, y, 8, method=method, generator=g) for _ in range(draws)])
    exact = x @ y
    se = ests.std(0) / math.sqrt(draws)
    z = (ests.mean(0) - exact) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.5  # 1024 entries: P(max |z| > 4.5) < 1 % if unbiased
    # norm-level check: ‖mean − exact‖² ≈ E‖est − exact‖² / draws for an unbiased estimator
    mse = (ests - exact).pow(2).sum((1, 2)).mean()
    ratio = (ests.mean(0) - exact).pow(2).sum() / (mse / draws)
    assert 0.5 < float(ratio) < 1.6


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


# --------------------------------------------------------------------------- 3-4. variance
def test_crs_variance_matches_closed_form():
    x, y = _lognormal_pair(n=128, d=16, seed=2)
    a_mat, b_mat = y.T, x  # estimate yᵀ x, contraction over the 128 rows
    exact = a_mat @ b_mat
    a = a_mat.norm(dim=0) * b_mat.norm(dim=1)
    p = a / a.sum()
    k = 16
    closed = ((a**2 / p).sum() - exact.pow(2).sum()) / k
    g = torch.Generator().manual_seed(0)
    draws = 5000
    err = torch.stack(
        [
            (approx_matmul(a_mat, b_mat, k, method="crs", generator=g) - exact).pow(2).sum()
            for _ in range(draws)
        ]
    )
    se = err.std() / math.sqrt(draws)
    assert abs(float(err.mean() - closed)) < 4 * float(se)
    assert abs(float(err.mean() / closed) - 1) < 0.1


def test_variance_ordering_wta_crs_uniform():
    x, y = _lognormal_pair(seed=0)
    exact = y.T @ x
    g = torch.Generator().manual_seed(1)
    var = {}
    for method in ("uniform", "crs", "wta"):
        errs = [
            (approx_matmul(y.T, x, 154, method=method, generator=g) - exact).pow(2).sum()
            for _ in range(600)
        ]
        var[method] = float(torch.stack(errs).mean() / exact.pow(2).sum())
    assert var["wta"] < 0.7 * var["crs"]
    assert var["crs"] < var["uniform"]


# --------------------------------------------------------------------------- 5-6. exactness
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
    idx, w = sample_indices(rows.norm(dim=1).float(), k, generator=gen)
    ref = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(k):
        ref += float(w[t]) * torch.outer(grads[idx[t]], rows[idx[t]])
    torch.testing.assert_close(layer.weight.grad, ref, rtol=1e-6, atol=1e-12)


def test_gradcheck_exact_path():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: WTACRSLinearFunction.apply(x, w, b, 5, True, None, None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


# --------------------------------------------------------------------------- 7. modes
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


# --------------------------------------------------------------------------- 8. bad inputs
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
    with pytest.raises(TypeError, match="generator"):
        WTACRSLinear(4, 4, generator="seed")
    layer = WTACRSLinear(4, 4)
    with pytest.raises(ValueError, match="batch dimension"):
        layer(torch.randn(4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="ratio"):
        convert_linear(nn.Sequential(nn.Linear(2, 2)), ratio=-1)
    with pytest.raises(ValueError, match="k"):
        sample_indices(torch.rand(5), 0)
    with pytest.raises(ValueError, match="method"):
        approx_matmul(torch.ones(2, 3), torch.ones(3, 2), 1, method="bad")


# --------------------------------------------------------------------------- 9-11
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


def test_checkpoint_replays_same_indices():
    torch.manual_seed(0)
    block = nn.Sequential(WTACRSLinear(8, 16, ratio=0.2, min_k=1), nn.Tanh(), nn.Linear(16, 4))
    x = torch.randn(64, 8)
    grads = []
    for use_ckpt in (False, True):
        block.zero_grad()
        torch.manual_seed(1)
        if use_ckpt:
            out = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            out = block(x)
        out.sum().backward()
        grads.append(block[0].weight.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_double_backward_raises():
    layer = WTACRSLinear(4, 4, ratio=0.3, min_k=1)
    x = torch.randn(30, 4, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


def test_convert_and_revert_plain_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.MultiheadAttention(4, 1))
    names = convert_linear(model, 0.3, include=None, exclude=("2",))
    assert names == ["0"] and isinstance(model[0], WTACRSLinear)
    assert type(model[3].out_proj) is not WTACRSLinear  # nn.Linear subclasses are left alone
    weight = model[0].weight
    assert revert_linear(model) == ["0"] and type(model[0]) is nn.Linear
    assert model[0].weight is weight
    with pytest.raises(ValueError, match="from_linear"):
        convert_linear(nn.Linear(2, 2))


def test_convert_hf_llama_by_name_patterns():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(32, (2, 6))
    before = model(input_ids=ids).logits
    names = convert_linear(model, 0.3, min_k=1)
    assert sorted(n.rsplit(".", 1)[-1] for n in names) == [
        "down_proj",
        "gate_proj",
        "o_proj",
        "up_proj",
    ]
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    qkv = convert_linear(model, 0.3, include=("*.self_attn.[qkv]_proj",))
    assert len(qkv) == 3
    assert len(revert_linear(model)) == 7


# --------------------------------------------------------------------------- 1-bit ReLU
def test_pack_bits_round_trip_and_masked_relu():
    for n in (1, 7, 8, 13, 64):
        mask = torch.rand(n, 3) > 0.5
        packed = pack_bits(mask)
        assert packed.numel() == math.ceil(n * 3 / 8)
        assert torch.equal(unpack_bits(packed, mask.shape), mask)
    x = torch.randn(6, 10, dtype=torch.float64)
    x[0, 0] = 0.0
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    gy = torch.randn(6, 10, dtype=torch.float64)
    ya, yb = relu_1bit(xa), torch.relu(xb)
    ya.backward(gy)
    yb.backward(gy)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
    assert saved_tensor_bytes(lambda: relu_1bit(xa).sum()) == math.ceil(60 / 8)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Sequential(nn.ReLU()))
    assert convert_relu(model) == ["1", "2.0"] and isinstance(model[2][0], MaskedReLU)
    with pytest.raises(TypeError, match="floating-point"):
        relu_1bit(torch.ones(3, dtype=torch.int64))
