"""Structured matrix estimation: completion and rotation-invariant denoising."""

from optforge.matrix.altmin import (
    ExactNormalEquations,
    RobustAltMinCompletion,
    SketchPreconditionedCG,
    make_incoherent_lowrank,
    relative_error,
    robust_altmin_complete,
)

__all__ = [
    "ExactNormalEquations",
    "RobustAltMinCompletion",
    "SketchPreconditionedCG",
    "make_incoherent_lowrank",
    "relative_error",
    "robust_altmin_complete",
]
