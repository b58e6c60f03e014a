"""Shared test utilities: the optimizer conformance suite (after scikit-learn's
``check_estimator``)."""

from optforge.testing.optimizer_checks import (
    CHECKS,
    ConvergenceSettings,
    InjectedFault,
    Problem,
    check_optimizer,
    make_linear_regression,
    make_quadratic,
    make_rosenbrock,
)

__all__ = [
    "CHECKS",
    "ConvergenceSettings",
    "InjectedFault",
    "Problem",
    "check_optimizer",
    "make_linear_regression",
    "make_quadratic",
    "make_rosenbrock",
]
