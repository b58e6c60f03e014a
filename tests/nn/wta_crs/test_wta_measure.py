"""No host sync, few aten ops, no graph break; the measurement helpers themselves."""

import pytest
import torch
from torch import nn

from optforge.nn import WTACRSLinear, aten_op_counts, host_sync_ops, saved_tensor_bytes


def _step(layer, x):
    def run():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    run()  # warm the constant tables
    return run


@pytest.mark.parametrize("config", [{}, {"method": "crs"}, {"det_ratio": 0.25}])
def test_no_host_sync_in_forward_backward(config):
    layer = WTACRSLinear(64, 32, ratio=0.3, **config)
    x = torch.randn(4, 128, 64, requires_grad=True)
    assert host_sync_ops(_step(layer, x)) == []


def test_host_sync_detector_sees_item():
    x = torch.randn(8)
    assert "aten::item" in host_sync_ops(lambda: x[torch.argmax(x)])


def test_aten_ops_of_a_converted_layer():
    """Fused sampling: 57 top-level ops before (issue #28), nn.Linear issues 12.

    Regression guards: WTA 28 (the goal, ≤ 2× = 24, is not met; docs/methods/wta-crs.md derives
    why), CRS 23 (its NaN/inf-safe search adds one view).
    """
    x = torch.randn(512, 64)
    linear = sum(aten_op_counts(_step(nn.Linear(64, 128), x)).values())
    wta = aten_op_counts(_step(WTACRSLinear(64, 128, ratio=0.3), x))
    crs = aten_op_counts(_step(WTACRSLinear(64, 128, ratio=0.3, method="crs"), x))
    assert linear == 12
    assert sum(wta.values()) <= 28
    assert sum(crs.values()) <= 2 * linear
    assert wta["aten::item"] == wta["aten::topk"] == wta["aten::multinomial"] == 0
    # a 3-D input adds one flattening view in the forward and one in the backward pass
    x3 = torch.randn(8, 64, 64)
    assert sum(aten_op_counts(_step(WTACRSLinear(64, 128, ratio=0.3), x3)).values()) <= 30


def test_compiles_without_graph_breaks():
    dynamo = pytest.importorskip("torch._dynamo")
    layer = WTACRSLinear(16, 8, ratio=0.3, min_k=1)
    x = torch.randn(4, 10, 16)
    dynamo.reset()
    explained = dynamo.explain(lambda x: layer(x).sum())(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    compiled(x).sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    dynamo.reset()


def test_saved_tensor_bytes_dedups_storages():
    x = torch.randn(10, 4, requires_grad=True)
    assert saved_tensor_bytes(lambda: (x * x).sum()) == 10 * 4 * 4
    assert saved_tensor_bytes(lambda: (x * x).sum(), exclude=[x]) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sync_debug_mode_error_passes():
    layer = WTACRSLinear(64, 32, ratio=0.3, device="cuda")
    x = torch.randn(4, 128, 64, device="cuda", requires_grad=True)
    layer(x).sum().backward()  # warm-up: constant tables, allocator
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    assert layer.weight.grad is not None
