"""Synthetic problem generators (planted-signal models)."""

from optforge.problems.lowrank import make_incoherent_lowrank
from optforge.problems.planted import (
    SingleIndexProblem,
    TensorPCAProblem,
    hermite,
    overlap,
    single_index,
    tensor_pca,
)

__all__ = [
    "SingleIndexProblem",
    "TensorPCAProblem",
    "hermite",
    "make_incoherent_lowrank",
    "overlap",
    "single_index",
    "tensor_pca",
]
