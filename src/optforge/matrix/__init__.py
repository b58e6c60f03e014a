"""Structured matrix estimation: completion and rotation-invariant denoising."""

from __future__ import annotations

import importlib
from typing import Any

from optforge.matrix.altmin import (
    ExactNormalEquations,
    SketchPreconditionedCG,
    relative_error,
    robust_altmin_complete,
)
from optforge.matrix.gamp_rie import (
    GampRieDivergenceWarning,
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
    "GampRieDivergenceWarning",
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


def __getattr__(name: str) -> Any:
    """Deprecated old home of :func:`optforge.problems.make_incoherent_lowrank` (one release).

    ``optforge.matrix`` and ``optforge.problems`` are independent method packages (an
    import-linter contract), so the alias is looked up at first access, with a warning.
    """
    if name == "make_incoherent_lowrank":
        import warnings

        warnings.warn(
            f"{__name__}.make_incoherent_lowrank moved to "
            "optforge.problems.make_incoherent_lowrank; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("optforge.problems.lowrank").make_incoherent_lowrank
    if name == "RobustAltMinCompletion":  # lazy: it needs scikit-learn (optforge.matrix.altmin)
        return importlib.import_module("optforge.matrix.altmin").RobustAltMinCompletion
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
