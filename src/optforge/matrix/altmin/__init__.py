r"""Low-rank matrix completion by robust alternating minimization in nearly linear time.

Paper: Yuzhou Gu, Zhao Song, Junze Yin, Lichen Zhang, "Low Rank Matrix Completion via Robust
Alternating Minimization in Nearly Linear Time" (arXiv 2302.11068; ICLR 2024). Base algorithm:
Jain, Netrapalli, Sanghavi, "Low-rank matrix completion using alternating minimization"
(STOC 2013, "JNS13").

Given the entries :math:`M_{ij}`, :math:`(i, j) \in \Omega`, of a rank-:math:`k` matrix, alternating
minimization (AltMin) fixes :math:`U` and solves for :math:`V`, then the reverse:

.. math::

    \hat V_{t+1} \approx \arg\min_V \|P_\Omega(U_t V^\top - M)\|_F^2,\quad
    V_{t+1} = \mathrm{QR}(\hat V_{t+1}).Q,\quad
    \hat U_{t+1} \approx \arg\min_U \|P_\Omega(U V_{t+1}^\top - M)\|_F^2,\quad
    U_{t+1} = \mathrm{QR}(\hat U_{t+1}).Q,

and outputs :math:`X = \hat U_T V_T^\top`. The :math:`V`-step splits into one :math:`k`-variable
least-squares problem per column :math:`j`, :math:`\min_v \|A_j v - b_j\|` with
:math:`A_j = U[\Omega_j]`, :math:`b_j = M[\Omega_j, j]`. The paper's change to JNS13 is that each
of these is solved *approximately*, by sketch-and-precondition: sketch :math:`S_j A_j`
(CountSketch, SRHT or Gaussian :math:`S_j` with :math:`s = O(k)` rows), take :math:`R_j` from a
Cholesky factor of :math:`(S_jA_j)^\top S_jA_j`, warm start from the sketch-and-solve solution
and run a few preconditioned-CG steps on :math:`A_j^\top A_j v = A_j^\top b_j` with
preconditioner :math:`(R_j^\top R_j)^{-1}`. All columns are handled at once through operators
built once per pattern of Ω (:class:`ObservedPattern`: the sketch as one sparse–dense product,
``A v`` as :math:`(U V^\top)[\Omega]`, ``Aᵀr`` as one sparse–dense product), so a half-sweep
costs :math:`O(|\Omega| k (q+3) + n s k^2)` instead of the :math:`O(|\Omega| k^2 + n k^3)` of
exact normal equations. ``solver="auto"`` picks the faster of the two by rank and sampling.

One idea per module:

* :mod:`~optforge.matrix.altmin.core`: the alternating-minimization sweep
  (:func:`robust_altmin_complete`, :class:`CompletionResult`, :func:`split_samples`);
* :mod:`~optforge.matrix.altmin.exact`: the solver interface (:class:`MaskedLstsqSolver`) and
  exact normal equations (:class:`ExactNormalEquations`, JNS13);
* :mod:`~optforge.matrix.altmin.sketch_pcg`: sketch-and-precondition + PCG
  (:class:`SketchPreconditionedCG`, the paper);
* :mod:`~optforge.matrix.altmin.sketch`: CountSketch, SRHT and Gaussian sketches
  (:func:`sketch_columns`);
* :mod:`~optforge.matrix.altmin.pattern`: the observed entries as operators built once per
  pattern of Ω (:class:`ObservedPattern`, :class:`CountSketch`; dense or sparse backend);
* :mod:`~optforge.matrix.altmin.auto`: ``solver="auto"`` (:func:`choose_solver`);
* :mod:`~optforge.matrix.altmin.layout`: the padded per-column layout (:class:`ColumnLayout`);
* :mod:`~optforge.matrix.altmin.spectral_init`: the randomized spectral initialisation;
* :mod:`~optforge.matrix.altmin.estimator`: the scikit-learn transformer
  :class:`RobustAltMinCompletion` (imported lazily: it needs scikit-learn);
* :mod:`~optforge.matrix.altmin.metrics`: :func:`relative_error`.

The test problem generator lives in :mod:`optforge.problems.lowrank`;
``optforge.matrix.altmin.make_incoherent_lowrank`` is a deprecated alias of it (one release).

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import RobustAltMinCompletion, relative_error
    >>> from optforge.problems import make_incoherent_lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> U, s, V, rows, cols, vals = make_incoherent_lowrank(60, 50, 2, p=0.5, generator=g)
    >>> est = RobustAltMinCompletion(rank=2, random_state=0).fit((rows, cols, vals), shape=(60, 50))
    >>> bool(relative_error(est.U_, est.V_, U, s, V) < 1e-8)
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from optforge._core import require
from optforge.matrix.altmin.auto import choose_solver
from optforge.matrix.altmin.core import CompletionResult, robust_altmin_complete, split_samples
from optforge.matrix.altmin.exact import ExactNormalEquations, MaskedLstsqSolver, SolverBackend
from optforge.matrix.altmin.layout import ColumnLayout
from optforge.matrix.altmin.metrics import relative_error
from optforge.matrix.altmin.pattern import CountSketch, ObservedPattern
from optforge.matrix.altmin.sketch import SketchKind, sketch_columns
from optforge.matrix.altmin.sketch_pcg import SketchPreconditionedCG
from optforge.matrix.altmin.spectral_init import spectral_init

__all__ = [
    "ColumnLayout",
    "CompletionResult",
    "CountSketch",
    "ExactNormalEquations",
    "MaskedLstsqSolver",
    "ObservedPattern",
    "RobustAltMinCompletion",
    "SketchKind",
    "SketchPreconditionedCG",
    "SolverBackend",
    "choose_solver",
    "relative_error",
    "robust_altmin_complete",
    "sketch_columns",
    "spectral_init",
    "split_samples",
]


def __getattr__(name: str) -> Any:
    """Lazy exports: :class:`RobustAltMinCompletion` (it subclasses scikit-learn's
    ``BaseEstimator``, so scikit-learn is imported on first access only), and the deprecated old
    home of :func:`optforge.problems.make_incoherent_lowrank` (one release).

    ``optforge.matrix`` and ``optforge.problems`` are independent method packages (an
    import-linter contract), so the alias is looked up at first access, with a warning.
    """
    if name == "RobustAltMinCompletion":
        require("sklearn", "repro")
        return importlib.import_module("optforge.matrix.altmin.estimator").RobustAltMinCompletion
    if name == "make_incoherent_lowrank":
        import warnings

        warnings.warn(
            f"{__name__}.make_incoherent_lowrank moved to "
            "optforge.problems.make_incoherent_lowrank; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("optforge.problems.lowrank").make_incoherent_lowrank
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
