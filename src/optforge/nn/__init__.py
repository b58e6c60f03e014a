"""Neural-network building blocks (memory-efficient layers)."""

from optforge.nn.activations import MaskedReLU, convert_relu, relu_1bit
from optforge.nn.wta_crs import (
    WTACRSLinear,
    WTACRSLinearFunction,
    approx_matmul,
    convert_linear,
    peak_memory_bytes,
    revert_linear,
    sample_indices,
    saved_tensor_bytes,
)

__all__ = [
    "MaskedReLU",
    "WTACRSLinear",
    "WTACRSLinearFunction",
    "approx_matmul",
    "convert_linear",
    "convert_relu",
    "peak_memory_bytes",
    "relu_1bit",
    "revert_linear",
    "sample_indices",
    "saved_tensor_bytes",
]
