"""convert_model(recompute=True): SwiGLU / RMSNorm that recompute elementwise tensors, exactly."""

import pytest
import torch

from optforge.nn import (
    apply_conversion,
    conversion_spec,
    convert_model,
    revert_linear,
    saved_tensor_bytes,
)
from optforge.nn.wta_crs import RecomputeRMSNorm, SwiGLUMLP, swiglu

transformers = pytest.importorskip("transformers")
llama = pytest.importorskip("transformers.models.llama.modeling_llama")

from test_wta_convert import _llama  # noqa: E402  (the tiny Llama the WTA-CRS tests share)


def _grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_matches_hf_bitwise_and_keeps_only_its_input(dtype):
    norm = llama.LlamaRMSNorm(16).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    light = RecomputeRMSNorm.from_module(norm)
    assert light.weight is norm.weight
    x = torch.randn(3, 5, 16, dtype=dtype, requires_grad=True)
    g = torch.randn(3, 5, 16, dtype=dtype)
    out = {}
    for name, module in (("hf", norm), ("light", light)):
        x.grad = norm.weight.grad = None
        y = module(x)
        y.backward(g)
        out[name] = (y.detach(), x.grad.clone(), norm.weight.grad.clone())
    for a, b in zip(out["hf"], out["light"], strict=True):
        assert torch.equal(a, b)
    hf_bytes = saved_tensor_bytes(lambda: norm(x).sum(), exclude=[norm.weight])
    assert saved_tensor_bytes(lambda: light(x).sum(), exclude=[norm.weight]) == x.nbytes
    if dtype == torch.float32:  # x, x̂ and the 15 rstd values
        assert hf_bytes == 2 * x.nbytes + 15 * 4


def test_swiglu_matches_the_plain_expression_and_keeps_two_tensors():
    gate = torch.randn(6, 8, requires_grad=True)
    up = torch.randn(6, 8, requires_grad=True)
    g = torch.randn(6, 8)
    plain = torch.autograd.grad(torch.nn.functional.silu(gate) * up, (gate, up), g)
    fused = torch.autograd.grad(swiglu(gate, up), (gate, up), g)
    assert all(torch.equal(a, b) for a, b in zip(plain, fused, strict=True))
    assert saved_tensor_bytes(lambda: (torch.nn.functional.silu(gate) * up).sum()) == 3 * 192
    assert saved_tensor_bytes(lambda: swiglu(gate, up).sum()) == 2 * 192
    up_only = torch.autograd.grad(swiglu(gate.detach(), up), up, g)[0]
    assert torch.equal(up_only, plain[1])


def test_convert_model_recompute_is_exact_and_saves_bytes():
    ids = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    plain = _llama()
    light = _llama()
    names = convert_model(light, 1.0, recompute=True)  # ratio 1: the linears stay exact
    recomputed = [n for n in names if "norm" in n or n.endswith("mlp")]
    assert len(recomputed) == 2 * 3 + 1  # two norms and one MLP per layer, the final norm
    assert isinstance(light.model.layers[0].mlp, SwiGLUMLP)
    assert isinstance(light.model.norm, RecomputeRMSNorm)
    assert light.state_dict().keys() == plain.state_dict().keys()
    loss_a, grads_a = _grads(plain, ids)
    loss_b, grads_b = _grads(light, ids)
    assert torch.equal(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-6, atol=1e-7)
    full = saved_tensor_bytes(
        lambda: plain(input_ids=ids, labels=ids).loss, exclude=plain.parameters()
    )
    fewer = saved_tensor_bytes(
        lambda: light(input_ids=ids, labels=ids).loss, exclude=light.parameters()
    )
    # per token: x̂ and rstd of 5 norms (5 · 33) and silu(gate) of 2 MLPs (2 · 64) fp32 values
    assert full - fewer == 4 * 16 * (5 * 33 + 2 * 64) * 4


def test_recompute_is_recorded_reapplied_and_survives_revert():
    model = _llama()
    names = convert_model(model, 0.3, recompute=True)
    spec = conversion_spec(model)
    assert spec.to_dict()["steps"][0]["recomputed"] == [n for n in names if n not in spec.layers]
    fresh = _llama()
    assert apply_conversion(fresh, spec.to_json()) == names
    assert isinstance(fresh.model.layers[1].post_attention_layernorm, RecomputeRMSNorm)
    bad = spec.to_dict()
    bad["steps"][0]["layers"] = []
    bad["steps"][0]["recomputed"] = ["model.layers.0.mlp.gate_proj"]  # a linear, not an MLP
    with pytest.raises(ValueError, match="to recompute, but it is a Linear"):
        apply_conversion(_llama(), bad)
    revert_linear(model)
    assert conversion_spec(model).steps[0].recomputed == spec.steps[0].recomputed
    assert isinstance(model.model.layers[0].mlp, SwiGLUMLP)
    plain = _llama()
    assert (
        "recomputed"
        not in (convert_model(plain, 0.3) and conversion_spec(plain).to_dict())["steps"][0]
    )


def test_recompute_must_be_a_bool():
    with pytest.raises(TypeError, match="recompute"):
        convert_model(_llama(), 0.3, recompute="yes")


def test_sampled_down_proj_rows_are_recomputed_from_gate_and_up():
    import copy

    from optforge.nn import GradNormCache, WTACRSLinear, convert_linear

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2)
    ref = llama.LlamaMLP(config)
    fused = copy.deepcopy(ref)
    for mlp in (ref, fused):  # a dedicated generator per layer: both draw the same rows
        convert_linear(mlp, 0.3, include=None, generator=7)
    fused = SwiGLUMLP.from_module(fused)
    assert isinstance(fused.down_proj, WTACRSLinear)
    x = torch.randn(4, 25, 16, requires_grad=True)
    g = torch.randn(4, 25, 16)
    grads = []
    for mlp in (ref, fused):
        x.grad = None
        mlp(x).backward(g)
        grads.append([x.grad.clone()] + [p.grad.clone() for p in mlp.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert torch.equal(grads[0][-1], grads[1][-1])  # ∇W_down: the same rows, the same product
    ref_bytes = saved_tensor_bytes(lambda: ref(x).sum(), exclude=ref.parameters())
    fused_bytes = saved_tensor_bytes(lambda: fused(x).sum(), exclude=fused.parameters())
    k = round(0.3 * 100)
    assert ref_bytes - fused_bytes == (100 * 32 + k * 32) * 4  # silu(gate) and the k rows
    # the gradient-norm cache still sees the down projection's output gradient
    cache = GradNormCache()
    model = _llama()
    convert_model(model, 0.3, recompute=True, grad_norm_cache=cache)
    ids = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    down = model.model.layers[0].mlp.down_proj
    assert cache._store[down._cache_key].shape == (64,)  # one norm per row of ∇Z_down


def test_sampled_rows_after_a_norm_are_recomputed_with_the_same_draws():
    ids = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    plain, light = _llama(), _llama()
    convert_model(plain, 0.3)
    convert_model(light, 0.3, recompute=True)
    torch.manual_seed(5)
    loss_a, grads_a = _grads(plain, ids)
    torch.manual_seed(5)  # the same draws, in the same order
    loss_b, grads_b = _grads(light, ids)
    assert torch.equal(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-6, atol=1e-7)
    torch.manual_seed(5)
    full = saved_tensor_bytes(
        lambda: plain(input_ids=ids, labels=ids).loss, exclude=plain.parameters()
    )
    torch.manual_seed(5)
    fewer = saved_tensor_bytes(
        lambda: light(input_ids=ids, labels=ids).loss, exclude=light.parameters()
    )
    n, k, d, d_ff = 64, 19, 32, 64  # tokens, sampled rows, hidden, MLP
    # per layer: x̂ and rstd of two norms, silu(gate), and the k stored rows of down_proj,
    # of q/k/v (one shared sample) and of gate/up (one); then x̂ and rstd of the final norm
    per_layer = n * 2 * (d + 1) + n * d_ff + k * d_ff + 2 * k * d
    assert full - fewer == 4 * (2 * per_layer + n * (d + 1))


def test_an_edited_norm_output_stores_its_rows():
    from optforge.nn import WTACRSLinear

    norm = RecomputeRMSNorm(torch.nn.Parameter(torch.ones(8)), 1e-6)
    layer = WTACRSLinear(8, 4, ratio=0.3, generator=3)  # k = 12 of 40 rows
    x = torch.randn(40, 8, requires_grad=True)

    def saved(make):
        return saved_tensor_bytes(lambda: layer(make()).sum(), exclude=[layer.weight])

    stored = saved(lambda: norm(x) * 1.0)  # another tensor: the layer stores its rows
    assert stored - saved(lambda: norm(x)) == 12 * 8 * 4  # recomputed from the kept x
    assert saved(lambda: norm(x).mul_(2.0)) == stored  # edited in place: stored again
    grads = []
    for make in (lambda: norm(x).mul_(2.0), lambda: norm(x) * 2.0):
        layer.generator.manual_seed(3)
        layer.zero_grad()
        layer(make()).sum().backward()
        grads.append(layer.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])
