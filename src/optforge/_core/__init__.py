"""Tiny shared helpers (validation, seeding, optional imports). Nothing paper-specific."""

from optforge._core.imports import require
from optforge._core.seeding import make_generator, seed_everything
from optforge._core.sharding import DTensorNotSupportedError, refuse_dtensor, refuse_dtensor_group
from optforge._core.typing import Reduction
from optforge._core.validation import (
    check_choice,
    check_finite,
    check_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "DTensorNotSupportedError",
    "Reduction",
    "check_choice",
    "check_finite",
    "check_in_range",
    "check_nonnegative",
    "check_nonnegative_int",
    "check_positive",
    "check_positive_int",
    "make_generator",
    "refuse_dtensor",
    "refuse_dtensor_group",
    "require",
    "seed_everything",
]

# Tensor-input validators (device, dtype, shape, emptiness, finiteness, index range) and seeds.
from optforge._core.validation import (
    NonFiniteError,
    OutOfRangeError,
    check_device,
    check_finite_number,
    check_floating,
    check_index_range,
    check_integer,
    check_is_tensor,
    check_nonempty,
    check_nonnegative_values,
    check_not_meta,
    check_seed,
    check_shape,
    check_tensor,
    same_device,
)

__all__ += [
    "NonFiniteError",
    "OutOfRangeError",
    "check_device",
    "check_finite_number",
    "check_floating",
    "check_index_range",
    "check_integer",
    "check_is_tensor",
    "check_nonempty",
    "check_nonnegative_values",
    "check_not_meta",
    "check_seed",
    "check_shape",
    "check_tensor",
    "same_device",
]
