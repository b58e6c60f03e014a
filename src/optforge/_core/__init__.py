"""Tiny shared helpers (validation, seeding, optional imports). Nothing paper-specific."""

from optforge._core.imports import require
from optforge._core.seeding import make_generator, seed_everything
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
    "Reduction",
    "check_choice",
    "check_finite",
    "check_in_range",
    "check_nonnegative",
    "check_nonnegative_int",
    "check_positive",
    "check_positive_int",
    "make_generator",
    "require",
    "seed_everything",
]
