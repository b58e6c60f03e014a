"""Structured matrix estimation: completion and rotation-invariant denoising."""

from optforge.matrix.altmin import (
    ExactNormalEquations,
    RobustAltMinCompletion,
    SketchPreconditionedCG,
    make_incoherent_lowrank,
    relative_error,
    robust_altmin_complete,
)
from optforge.matrix.gamp_rie import (
    GampRieResult,
    RIEDenoiser,
    WishartGOESpectrum,
    bayes_optimal_mse,
    denoising_mmse,
    gamp_rie,
    perfect_recovery_threshold,
    sensing_adjoint,
    sensing_forward,
    state_evolution,
)
from optforge.matrix.quadratic_nets import (
    QuadraticNet,
    QuadTeacherData,
    sample_quadratic_teacher,
    teacher_width,
    train_gd_ensemble,
)

__all__ = [
    "ExactNormalEquations",
    "GampRieResult",
    "QuadTeacherData",
    "QuadraticNet",
    "RIEDenoiser",
    "RobustAltMinCompletion",
    "SketchPreconditionedCG",
    "WishartGOESpectrum",
    "bayes_optimal_mse",
    "denoising_mmse",
    "gamp_rie",
    "make_incoherent_lowrank",
    "perfect_recovery_threshold",
    "relative_error",
    "robust_altmin_complete",
    "sample_quadratic_teacher",
    "sensing_adjoint",
    "sensing_forward",
    "state_evolution",
    "teacher_width",
    "train_gd_ensemble",
]
