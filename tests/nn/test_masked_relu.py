"""1-bit-mask ReLU: same values and gradients as torch.relu, numel/8 saved bytes."""

import math

import pytest
import torch
from torch import nn

from optforge.nn import MaskedReLU, convert_relu, relu_1bit, saved_tensor_bytes
from optforge.nn.activations import pack_bits, unpack_bits


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
