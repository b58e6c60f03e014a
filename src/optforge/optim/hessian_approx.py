"""The Hessian approximations of gradient-regularized Newton, at their short import path.

They live in :mod:`optforge.optim.regularized_newton.hessian_approx`; this module re-exports
them so that ``from optforge.optim.hessian_approx import FisherTerm`` keeps working.
"""

from optforge.optim.regularized_newton.hessian_approx import (
    CallableHessian,
    CurvatureOracle,
    EmpiricalFisher,
    ExactHessian,
    FisherTerm,
    FixedHessian,
    GaussNewton,
    HessianApprox,
    HessianOperator,
    LazyHessian,
    RankOne,
    SoftmaxGaussNewton,
    SubsampledHessian,
    WeightedGaussNewtonLSE,
    ZeroHessian,
    as_hessian_approx,
)

__all__ = [
    "CallableHessian",
    "CurvatureOracle",
    "EmpiricalFisher",
    "ExactHessian",
    "FisherTerm",
    "FixedHessian",
    "GaussNewton",
    "HessianApprox",
    "HessianOperator",
    "LazyHessian",
    "RankOne",
    "SoftmaxGaussNewton",
    "SubsampledHessian",
    "WeightedGaussNewtonLSE",
    "ZeroHessian",
    "as_hessian_approx",
]
