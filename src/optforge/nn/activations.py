"""Activations that save a 1-bit mask for the backward pass instead of their output.

``nn.ReLU`` saves its output (``N × d`` values) to form ``grad · (out > 0)``. When the next
linear layer keeps only sampled rows (:class:`optforge.nn.WTACRSLinear`), that saved output is
what keeps the full activation alive. :class:`MaskedReLU` saves the sign pattern packed 8
entries per byte (``N·d/8`` bytes), as the WTA-CRS paper's runs did with their fused
``quant_relu`` CUDA kernel (arXiv:2305.15265, official code ``approxlinear``); here the packing
is plain PyTorch (shifts and a sum over groups of 8).

Example:
    >>> import torch
    >>> from optforge.nn import MaskedReLU
    >>> act = MaskedReLU()
    >>> x = torch.randn(4, 8, requires_grad=True)
    >>> act(x).sum().backward()
    >>> bool(torch.equal(x.grad, (x > 0).float()))
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["MaskedReLU", "convert_relu", "pack_bits", "relu_1bit", "unpack_bits"]


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a boolean tensor into ``ceil(numel / 8)`` uint8 values (little-endian bit order)."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = F.pad(flat, (0, (-flat.numel()) % 8))
    shifts = torch.arange(8, device=mask.device, dtype=torch.uint8)
    return (flat.view(-1, 8) << shifts).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: a boolean tensor of ``shape``."""
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = (packed[:, None] >> shifts) & 1
    return bits.reshape(-1)[: shape.numel()].view(shape).bool()


class _ReLU1Bit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.relu(x)
        ctx.shape = x.shape
        ctx.save_for_backward(pack_bits(out > 0))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (packed,) = ctx.saved_tensors
        return grad * unpack_bits(packed, ctx.shape)


def relu_1bit(x: Tensor) -> Tensor:
    """``relu(x)`` whose backward keeps a 1-bit mask (``numel/8`` bytes) instead of the output.

    Same values and gradients as ``torch.relu`` (the subgradient at 0 is 0, as in PyTorch).
    Differentiable once.
    """
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.relu(x)
    return _ReLU1Bit.apply(x)


class MaskedReLU(nn.Module):
    """Drop-in ``nn.ReLU`` that saves a bit-packed mask for the backward pass."""

    def forward(self, input: Tensor) -> Tensor:
        return relu_1bit(input)


def convert_relu(model: nn.Module) -> list[str]:
    """Replace every ``nn.ReLU`` submodule of ``model`` in place by :class:`MaskedReLU`.

    Args:
        model: The model to modify (functional ``F.relu`` calls are not affected).

    Returns:
        The names of the replaced modules.
    """
    names = [n for n, m in model.named_modules() if type(m) is nn.ReLU and n]
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, MaskedReLU())
    return names
