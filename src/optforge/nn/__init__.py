"""Neural-network building blocks (memory-efficient layers)."""

from optforge.nn.activations import MaskedReLU, convert_relu, relu_1bit
from optforge.nn.wta_crs import (
    ALL_TARGETS,
    DEFAULT_TARGETS,
    GradNormCache,
    SampleShare,
    WTACRSLinear,
    WTACRSLinearFunction,
    approx_matmul,
    aten_op_counts,
    convert_linear,
    convert_model,
    expected_squared_error,
    host_sync_ops,
    peak_memory_bytes,
    revert_linear,
    sample_indices,
    saved_tensor_bytes,
)

__all__ = [
    "ALL_TARGETS",
    "DEFAULT_TARGETS",
    "GradNormCache",
    "MaskedReLU",
    "SampleShare",
    "WTACRSLinear",
    "WTACRSLinearFunction",
    "approx_matmul",
    "aten_op_counts",
    "convert_linear",
    "convert_model",
    "convert_relu",
    "expected_squared_error",
    "host_sync_ops",
    "peak_memory_bytes",
    "relu_1bit",
    "revert_linear",
    "sample_indices",
    "saved_tensor_bytes",
]
