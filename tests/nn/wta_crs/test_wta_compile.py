"""Under ``torch.compile`` (inductor) the backward pass uses the forward pass's sample.

A sampled layer's output does not depend on its sample, so inductor's partitioner was free to
recompute the sampler in the backward graph, with fresh random seeds: the gradient rows of new
indices were paired with the input rows the forward kept (a biased ``∇W``). :func:`tie_sample`
makes the sample part of the forward computation. The check is exact, on one step: the input rows
are distinct one-hot vectors, so column ``j`` of ``∇W`` is ``c_j · G_j`` (``c_j`` = the summed
weights of row ``j`` times its norm) exactly when the backward gathers the gradient rows of the
very indices whose input rows the forward kept, and a mix of other rows of ``G`` when it does not.
Before the fix the four plain layers failed it (wrong columns of up to 20× the gradient's scale);
the SwiGLU path, which gathers its rows in the backward pass from the same indices, passed.
"""

import shutil

import pytest
import torch
from torch import nn

from optforge.nn import WTACRSLinear
from optforge.nn.wta_crs import SwiGLUMLP

N = 48

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend (inductor) needs a C++ compiler",
)


def _mlp() -> tuple[nn.Module, WTACRSLinear]:
    """``down_proj`` reads ``h = silu(gate)·up = silu(8 s_i)·s_i e_i``: one-hot rows too."""
    gate, up = nn.Linear(N, N, bias=False), nn.Linear(N, N, bias=False)
    with torch.no_grad():
        gate.weight.copy_(8 * torch.eye(N))
        up.weight.copy_(torch.eye(N))
    down = WTACRSLinear(N, 6, ratio=0.6, bias=False)
    return SwiGLUMLP(gate, up, down), down


LAYERS = {
    "wta": lambda: WTACRSLinear(N, 6, ratio=0.25, bias=False),
    "wta-0.6": lambda: WTACRSLinear(N, 6, ratio=0.6, bias=False),
    "crs": lambda: WTACRSLinear(N, 6, ratio=0.5, method="crs"),
    "fixed-winners": lambda: WTACRSLinear(N, 6, ratio=0.5, det_ratio=0.25),
    "swiglu-recompute": _mlp,
}


@pytest.mark.parametrize("name", LAYERS)
def test_compiled_backward_pairs_the_forward_sample(name):
    dynamo = pytest.importorskip("torch._dynamo")
    torch.manual_seed(0)
    built = LAYERS[name]()
    model, layer = built if isinstance(built, tuple) else (built, built)
    x = torch.eye(N) * (1 + torch.rand(N, 1))  # distinct norms: winners and draws
    g = torch.randn(N, 6)
    dynamo.reset()
    (torch.compile(model, fullgraph=True)(x) * g).sum().backward()
    dynamo.reset()
    grad_w = layer.weight.grad
    coef = (grad_w * g.t()).sum(0) / (g * g).sum(1)
    torch.testing.assert_close(grad_w, g.t() * coef, rtol=1e-5, atol=1e-5)
    assert (coef != 0).sum() >= 6  # the sample reached the gradient
    if layer.bias is not None:  # exact, through the tie's pass-through gradient
        torch.testing.assert_close(layer.bias.grad, g.sum(0))


def test_converted_llama_compiles_whole_and_keeps_exact_gradients_exact():
    """``convert_model(..., recompute=True)`` on a tiny Llama compiles with ``fullgraph=True``
    (``aot_eager``: the tracing and the partitioned autograd graph, without code generation);
    the loss and every gradient that WTA-CRS does not sample (embeddings, norms, head: only the
    converted weights' ``∇W`` is sampled, ``∇x`` stays exact) equal eager mode's."""
    pytest.importorskip("transformers")
    dynamo = pytest.importorskip("torch._dynamo")
    from optforge.nn import convert_model
    from optforge.repro.llm import tiny_llama

    config = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 86,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
    }
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    models = []
    for compiled in (False, True):
        model = tiny_llama(seed=0, **config)
        convert_model(model, ratio=0.3, recompute=True)
        run = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        dynamo.reset()
        loss = run(input_ids=ids, labels=ids).loss
        loss.backward()
        dynamo.reset()
        models.append((model, loss.detach()))
    (eager, eager_loss), (comp, comp_loss) = models
    torch.testing.assert_close(comp_loss, eager_loss)
    sampled = {n for n, m in eager.named_modules() if isinstance(m, WTACRSLinear)}
    checked = 0
    for (name, p_eager), (_, p_comp) in zip(
        eager.named_parameters(), comp.named_parameters(), strict=True
    ):
        if name.rsplit(".", 1)[0] in sampled:
            assert torch.isfinite(p_comp.grad).all(), name
            continue
        torch.testing.assert_close(p_comp.grad, p_eager.grad, rtol=1e-4, atol=1e-5)
        checked += 1
    assert len(sampled) == 7 and checked >= 4  # embeddings, 2 norms in the block, final norm


def test_grad_norm_cache_under_compile_breaks_the_graph_or_says_why():
    """The cache writes from inside the backward pass, which inductor cannot compile (it failed
    with an internal assertion): a compiled layer with a cache now breaks the graph there, runs
    and caches the same gradient norms as eager mode; ``fullgraph=True`` names the cause."""
    dynamo = pytest.importorskip("torch._dynamo")
    from optforge.nn import GradNormCache

    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(16, 2, 8, generator=gen), torch.randn(16, 2, 4, generator=gen)
    examples = torch.arange(16)
    scales = []
    for mode in ("eager", "compiled"):
        cache = GradNormCache(16)
        layer = WTACRSLinear(8, 4, ratio=0.3, grad_norm_cache=cache)
        run = layer if mode == "eager" else torch.compile(layer)
        dynamo.reset()
        for _ in range(2):
            with cache.batch(examples):
                (run(x) * g).sum().backward()
            assert torch.isfinite(layer.weight.grad).all()
        with cache.batch(examples):
            scales.append(cache.scale(layer._cache_key, x.shape, x.device))
    torch.testing.assert_close(scales[1], scales[0])
    dynamo.reset()
    message = "grad_norm_cache is an eager-mode feature"
    with pytest.raises(Exception, match=message), cache.batch(examples):
        torch.compile(layer, fullgraph=True)(x)
    dynamo.reset()
