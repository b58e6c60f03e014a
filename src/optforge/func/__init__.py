"""Shared math below the methods: per-example gradient norms ("ghost" identities).

Used by several method packages (``optforge.rl`` today, ``optforge.optim`` next); it imports only
``torch`` and ``optforge._core``, never a method package.
"""

from optforge.func.ghost_norms import (
    GhostGradients,
    GhostKind,
    GhostNormRecorder,
    UnsupportedModuleError,
    ghost_kind,
    layer_grad_sqnorms,
    per_example_grad_sqnorms,
)

__all__ = [
    "GhostGradients",
    "GhostKind",
    "GhostNormRecorder",
    "UnsupportedModuleError",
    "ghost_kind",
    "layer_grad_sqnorms",
    "per_example_grad_sqnorms",
]
