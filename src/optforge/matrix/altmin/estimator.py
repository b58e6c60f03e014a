"""A scikit-learn style matrix-completion estimator around robust alternating minimization.

:class:`RobustAltMinCompletion` fits the factors ``U_``, ``V_`` of a rank-``k`` completion by
:func:`~optforge.matrix.altmin.robust_altmin_complete` from a NaN-masked matrix (numpy or torch)
or from ``(rows, cols, values)`` triplets, and fills the missing entries as scikit-learn and
fancyimpute imputers do (observed entries are kept). It follows the scikit-learn estimator
conventions (``get_params``/``set_params``, ``fit`` returning ``self``, fitted attributes with a
trailing underscore) without depending on scikit-learn.

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

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from optforge._core import check_choice, check_nonnegative_int, make_generator
from optforge.matrix.altmin.core import robust_altmin_complete
from optforge.matrix.altmin.exact import ExactNormalEquations, MaskedLstsqSolver
from optforge.matrix.altmin.sketch import SketchKind
from optforge.matrix.altmin.sketch_pcg import SketchPreconditionedCG

__all__ = ["RobustAltMinCompletion"]


class RobustAltMinCompletion:
    """Matrix completion by robust alternating minimization, with a scikit-learn interface.

    ``fit`` takes a 2-D array (numpy or torch) whose missing entries are NaN, or a triplet
    ``(rows, cols, values)`` with ``shape=(m, n)``. ``transform(X)`` returns ``X`` with its NaN
    entries filled by the completion ``U_ @ V_.T`` (observed entries kept, as fancyimpute and
    scikit-learn imputers do); ``fit_transform`` does both.

    Args:
        rank: target rank ``k`` (< min(m, n)).
        n_iters: maximum sweeps.
        solver: ``"sketch"`` (the paper: sketch-and-precondition + PCG) or ``"exact"`` (JNS13).
        sketch: ``"countsketch"``, ``"srht"`` or ``"gaussian"`` (``solver="sketch"`` only).
        sketch_size: sketch rows (default ``max(4k, k + 8)``).
        pcg_iters: PCG iterations per least-squares solve (0 = sketch-and-solve).
        init: ``"svd"`` or ``"random"``.
        sample_splitting: JNS13 theory mode (fresh samples per half-step).
        clip_mu: incoherence bound for clipping the init (``None`` = off).
        ridge: ridge λ ≥ 0 in every least-squares solve.
        tol: relative-change stopping tolerance on the observed-entry residual.
        dtype: torch dtype of the computation.
        device: torch device of the computation.
        random_state: seed (or ``None``) for the init, sketches and sample splitting.

    Attributes:
        U_: (m, k) torch tensor, left factor (un-normalised).
        V_: (n, k) torch tensor, orthonormal right factor.
        n_iter_: sweeps run.
        history_: per-sweep history (see :class:`~optforge.matrix.altmin.CompletionResult`).
        shape_: fitted ``(m, n)``.
    """

    def __init__(
        self,
        rank: int,
        *,
        n_iters: int = 20,
        solver: Literal["sketch", "exact"] = "sketch",
        sketch: SketchKind = "countsketch",
        sketch_size: int | None = None,
        pcg_iters: int = 3,
        init: Literal["svd", "random"] = "svd",
        sample_splitting: bool = False,
        clip_mu: float | None = None,
        ridge: float = 0.0,
        tol: float = 1e-10,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        random_state: int | None = None,
    ) -> None:
        self.rank = rank
        self.n_iters = n_iters
        self.solver = solver
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.pcg_iters = pcg_iters
        self.init = init
        self.sample_splitting = sample_splitting
        self.clip_mu = clip_mu
        self.ridge = ridge
        self.tol = tol
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    _PARAMS = (
        "rank",
        "n_iters",
        "solver",
        "sketch",
        "sketch_size",
        "pcg_iters",
        "init",
        "sample_splitting",
        "clip_mu",
        "ridge",
        "tol",
        "dtype",
        "device",
        "random_state",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters, as scikit-learn's ``BaseEstimator.get_params``."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params: Any) -> RobustAltMinCompletion:
        """Set hyper-parameters, as scikit-learn's ``BaseEstimator.set_params``."""
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"unknown parameter {name!r}; valid: {self._PARAMS}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"RobustAltMinCompletion(rank={self.rank}, solver={self.solver!r})"

    def _entries(
        self, X: Any, shape: tuple[int, int] | None
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        dev = torch.device(self.device)
        if isinstance(X, tuple | list) and len(X) == 3:
            if shape is None:
                raise ValueError(
                    "shape=(m, n) is required when X is a (rows, cols, values) triplet"
                )
            rows, cols, vals = (
                torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a) for a in X
            )
            return (
                rows.to(dev).long() if not rows.dtype.is_floating_point else rows.to(dev),
                cols.to(dev).long() if not cols.dtype.is_floating_point else cols.to(dev),
                vals.to(dev, self.dtype),
                (int(shape[0]), int(shape[1])),
            )
        dense = _as_tensor(X, "X").to(dev, self.dtype)
        if dense.ndim != 2:
            raise ValueError(f"X must be a 2-D matrix (NaN = missing), got {dense.ndim}-D")
        observed = ~torch.isnan(dense)
        inf = torch.isinf(dense)
        if bool(inf.any()):
            raise ValueError(f"X contains {int(inf.sum())} infinite observed value(s)")
        idx = observed.nonzero()
        return idx[:, 0], idx[:, 1], dense[observed], (dense.shape[0], dense.shape[1])

    def fit(self, X: Any, y: None = None, *, shape: tuple[int, int] | None = None) -> Any:
        """Learn the factors ``U_`` and ``V_``.

        Args:
            X: (m, n) array or tensor with NaN for missing entries, or ``(rows, cols, values)``.
            y: ignored (scikit-learn convention).
            shape: ``(m, n)``, required for triplet input.

        Returns:
            ``self``.
        """
        check_choice("solver", self.solver, ("sketch", "exact"))
        check_nonnegative_int("pcg_iters", self.pcg_iters)
        rows, cols, vals, shp = self._entries(X, shape)
        gen = make_generator(self.random_state, torch.device(self.device))
        if self.solver == "sketch":
            solver: MaskedLstsqSolver = SketchPreconditionedCG(
                sketch=self.sketch,
                sketch_size=self.sketch_size,
                max_iter=self.pcg_iters,
                generator=gen,
            )
        else:
            solver = ExactNormalEquations()
        result = robust_altmin_complete(
            rows,
            cols,
            vals,
            shp,
            self.rank,
            n_iters=self.n_iters,
            solver=solver,
            init=self.init,
            sample_splitting=self.sample_splitting,
            clip_mu=self.clip_mu,
            ridge=self.ridge,
            tol=self.tol,
            generator=gen,
        )
        self.U_, self.V_ = result.U, result.V
        self.n_iter_ = result.n_iters
        self.history_ = result.history
        self.shape_ = shp
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "U_"):
            raise RuntimeError("this RobustAltMinCompletion is not fitted yet; call fit first")

    def predict(self, rows: Any, cols: Any) -> Tensor:
        """Completed values at the given (row, col) pairs."""
        self._check_fitted()
        r = torch.as_tensor(rows, device=self.U_.device).long()
        c = torch.as_tensor(cols, device=self.U_.device).long()
        return (self.U_[r] * self.V_[c]).sum(1)

    def reconstruct(self) -> Tensor:
        """The full completed matrix ``U_ @ V_.T`` (dense, m×n)."""
        self._check_fitted()
        return self.U_ @ self.V_.T

    def transform(self, X: Any) -> Any:
        """Fill the NaN entries of ``X`` (shape ``shape_``) from the completion.

        Returns a numpy array for numpy input and a tensor for tensor input.
        """
        self._check_fitted()
        dense = _as_tensor(X, "X")
        if tuple(dense.shape) != tuple(self.shape_):
            raise ValueError(f"X must be the fitted shape {self.shape_}, got {tuple(dense.shape)}")
        full = self.reconstruct().to(
            dense.device, dense.dtype if dense.is_floating_point() else self.dtype
        )
        out = torch.where(torch.isnan(dense), full, dense.to(full.dtype))
        return out.cpu().numpy() if not isinstance(X, Tensor) else out

    def fit_transform(self, X: Any, y: None = None) -> Any:
        """``fit(X)`` then ``transform(X)`` on a NaN-masked matrix."""
        return self.fit(X).transform(X)


def _as_tensor(X: Any, name: str) -> Tensor:
    if isinstance(X, Tensor):
        return X
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numeric array, got {type(X).__name__}") from err
    return torch.from_numpy(arr)
