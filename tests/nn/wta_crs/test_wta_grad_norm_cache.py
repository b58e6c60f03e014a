"""GradNormCache: the official p ∝ ‖H_i‖·‖∇Z_i‖ from cached gradient norms (spec §3.2, §7.8)."""

import math

import pytest
import torch

from optforge.nn import GradNormCache, WTACRSLinear, expected_squared_error
from optforge.nn.wta_crs import sample_rows, sample_size


def _data(n=96, d_in=8, d_out=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    x = x * torch.exp(torch.randn(n, 1, generator=g, dtype=torch.float64))
    gy = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    gy = gy * torch.exp(2 * torch.randn(n, 1, generator=g, dtype=torch.float64))
    return x, gy


def test_previous_step_norms_set_the_probabilities():
    x, gy = _data()
    cache = GradNormCache(floor=0.1)
    layer = WTACRSLinear(8, 5, ratio=0.25, min_k=1, generator=3, grad_norm_cache=cache)
    layer.double()
    layer(x).backward(gy)  # step 1: activation-only
    norms = gy.norm(dim=1)
    expect_scale = (norms + 0.1 * norms.mean()).float()
    state = layer.generator.get_state()
    layer.weight.grad = None
    layer(x).backward(gy)  # step 2: cached norms
    gen = torch.Generator()
    gen.set_state(state)
    k = sample_size(96, 0.25, 1)
    idx, w = sample_rows(x, k, generator=gen, scale=expect_scale.double())
    ref = (gy[idx] * w[:, None]).T @ x[idx]
    torch.testing.assert_close(layer.weight.grad, ref, rtol=1e-5, atol=1e-8)


def test_cache_estimate_unbiased_and_lower_variance():
    x, gy = _data(seed=1)
    exact = gy.T @ x
    cache = GradNormCache()
    layer = WTACRSLinear(8, 5, ratio=0.25, min_k=1, generator=7, grad_norm_cache=cache)
    layer.double()
    layer(x).backward(gy)  # fills the cache
    draws = 3000
    grads = []
    for _ in range(draws):
        layer.weight.grad = None
        layer(x).backward(gy)
        grads.append(layer.weight.grad.clone())
    grads = torch.stack(grads)
    z = (grads.mean(0) - exact) / (grads.std(0) / math.sqrt(draws)).clamp_min(1e-12)
    assert z.abs().max() < 4.0  # 40 entries
    mse = float((grads - exact).pow(2).sum((1, 2)).mean())
    k = sample_size(96, 0.25, 1)
    g_hat = gy.norm(dim=1) + 0.1 * gy.norm(dim=1).mean()
    closed_cache = float(expected_squared_error(gy.T, x, k, probs=x.norm(dim=1) * g_hat))
    closed_act = float(expected_squared_error(gy.T, x, k, probs=x.norm(dim=1)))
    assert abs(mse / closed_cache - 1) < 0.1  # the draws follow the cached probabilities
    assert closed_cache < 0.5 * closed_act  # and they pay: far lower variance


def test_per_example_cache_reads_and_writes_by_example():
    torch.manual_seed(0)
    cache = GradNormCache(num_examples=10, floor=0.0)
    layer = WTACRSLinear(6, 3, ratio=0.3, min_k=1, grad_norm_cache=cache)
    x = torch.randn(2, 7, 6)
    gy = torch.randn(2, 7, 3)
    with cache.batch(torch.tensor([4, 1])):
        layer(x).backward(gy)
    store = cache._store[layer._cache_key]
    assert store.shape == (10, 7) and store.dtype == torch.bfloat16
    expect = gy.norm(dim=2).to(torch.bfloat16)
    assert torch.equal(store[4], expect[0]) and torch.equal(store[1], expect[1])
    assert store[[0, 2, 3, 5]].abs().sum() == 0
    with cache.batch(torch.tensor([1, 4])):  # swapped order: rows follow the examples
        scale = cache.scale(layer._cache_key, x.shape, x.device)
    torch.testing.assert_close(scale.view(2, 7), expect[[1, 0]].float())
    with cache.batch(torch.tensor([0, 2])):  # never seen: activation-only (ĝ = 1)
        assert torch.equal(cache.scale(layer._cache_key, x.shape, x.device), torch.ones(14))


def test_per_example_cache_errors():
    cache = GradNormCache(num_examples=4)
    layer = WTACRSLinear(6, 3, ratio=0.3, min_k=1, grad_norm_cache=cache)
    with pytest.raises(ValueError, match="example indices"):
        layer(torch.randn(2, 5, 6))
    with cache.batch(torch.tensor([0, 1])):
        with pytest.raises(ValueError, match=r"\(B, L, d\)"):
            layer(torch.randn(10, 6))
        layer(torch.randn(2, 5, 6)).sum().backward()
        with pytest.raises(ValueError, match="shape mismatch"):
            layer(torch.randn(2, 6, 6))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        cache.set_batch(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="1-D integer"):
        cache.set_batch(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="num_examples"):
        GradNormCache().set_batch(torch.tensor([0]))
    with pytest.raises(ValueError, match="floor"):
        GradNormCache(floor=-1.0)
    with pytest.raises(ValueError, match="num_examples"):
        GradNormCache(num_examples=0)
