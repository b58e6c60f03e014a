"""Baselines that reproductions compare against, as documented, reusable modules.

* :mod:`~optforge.repro.baselines.soft_impute`: SoftImpute (Mazumder, Hastie & Tibshirani 2010),
  matrix completion by iterative soft-thresholded SVD.
"""

from optforge.repro.baselines.soft_impute import (
    SoftImpute,
    dense_observations,
    lambda_path,
    soft_impute_path,
)

__all__ = ["SoftImpute", "dense_observations", "lambda_path", "soft_impute_path"]
