r"""A scikit-learn matrix-completion transformer around robust alternating minimization.

:class:`RobustAltMinCompletion` is a scikit-learn estimator (``BaseEstimator`` +
``TransformerMixin``): ``fit(X)`` learns the factors ``U_`` (one row per training sample) and
``V_`` (one row per feature) of a rank-``k`` completion of a NaN-masked matrix by
:func:`~optforge.matrix.altmin.robust_altmin_complete`, and ``transform(X_new)`` fills the NaN
entries of **new** rows by *fold-in*, as ALS recommenders do: with ``V_`` fixed, each new row's
factor is the (ridge) least-squares solution on its observed entries,

.. math::

    u = \arg\min_u \|V_{O}\, u - x_{O}\|^2 + \lambda \|u\|^2 ,\qquad
    \hat x_{\bar O} = V_{\bar O}\, u ,

and its missing entries are read from ``u V_ᵀ`` (observed entries are kept, as scikit-learn's
imputers do). So the estimator works inside ``Pipeline``, ``cross_val_score`` and
``GridSearchCV``. ``score(X)`` is the negative RMSE of the fold-in on a held-out share of the
observed entries of ``X``; ``predict_entries(rows, cols)`` reads entries of the fitted
(training) matrix ``U_ V_ᵀ``.

scikit-learn (>= 1.6) is needed for this module (``pip install 'optforge[repro]'``); the
functional API (:func:`~optforge.matrix.altmin.robust_altmin_complete`) does not need it.

Example:
    >>> import numpy as np
    >>> from optforge.matrix.altmin import RobustAltMinCompletion
    >>> rng = np.random.default_rng(0)
    >>> M = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 40))       # rank 3
    >>> X = np.where(rng.random(M.shape) < 0.5, M, np.nan)             # half observed
    >>> est = RobustAltMinCompletion(rank=3, random_state=0).fit(X[:150])
    >>> filled = est.transform(X[150:])                                 # new rows: fold-in
    >>> bool(np.abs(filled - M[150:]).max() < 1e-6)
    True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from optforge._core import (
    check_choice,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    make_generator,
)
from optforge.matrix.altmin.auto import choose_solver
from optforge.matrix.altmin.core import robust_altmin_complete
from optforge.matrix.altmin.exact import _SOLVER_BACKENDS, ExactNormalEquations, MaskedLstsqSolver
from optforge.matrix.altmin.sketch import _SKETCHES
from optforge.matrix.altmin.sketch_pcg import SketchPreconditionedCG

__all__ = ["RobustAltMinCompletion"]


class RobustAltMinCompletion(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Matrix completion by robust alternating minimization, as a scikit-learn transformer.

    ``fit(X)`` takes an (n_samples, n_features) array-like whose missing entries are NaN (or a
    ``(rows, cols, values)`` triplet with ``shape=(m, n)``); ``transform(X)`` fills the NaN
    entries of any rows with ``n_features_in_`` features by fold-in against ``V_`` (observed
    entries kept); ``fit_transform(X)`` fills them from the fitted completion ``U_ V_ᵀ``.
    Sparse input is refused (``TypeError``): NaN marks a missing entry, and an implicit zero of
    a sparse matrix would be read as an observation. A torch tensor in gives a tensor out.

    Args:
        rank: target rank ``k`` (< min(n_samples, n_features)).
        n_iters: maximum sweeps.
        solver: ``"auto"`` (the faster solver for this rank and sampling,
            :func:`~optforge.matrix.altmin.choose_solver`), ``"sketch"`` (the paper:
            sketch-and-precondition + PCG) or ``"exact"`` (JNS13 normal equations).
        sketch: ``"countsketch"``, ``"srht"`` or ``"gaussian"`` (sketch solver only).
        sketch_size: sketch rows (default ``max(4k, k + 8)``).
        pcg_iters: PCG iterations per least-squares solve (0 = sketch-and-solve).
        init: ``"svd"`` or ``"random"``.
        sample_splitting: JNS13 theory mode (fresh samples per half-step).
        clip_mu: incoherence bound for clipping the init (``None`` = off).
        ridge: ridge λ ≥ 0 in every least-squares solve, the fold-in's included.
        tol: relative-change stopping tolerance on the observed-entry residual.
        dtype: computation dtype (``"float64"``, ``"float32"`` or a ``torch.dtype``).
        device: torch device of the computation.
        backend: how the solvers apply the observed entries (``"auto"``, ``"dense"``,
            ``"sparse"``, ``"padded"``; see :class:`~optforge.matrix.altmin.ObservedPattern`).
        random_state: seed (int, ``None`` or a ``numpy.random.RandomState``) of the init, the
            sketches, the sample splitting and the held-out entries of ``score``.

    Attributes:
        U_: (n_samples, k) torch tensor, left factor of the training rows (un-normalised).
        V_: (n_features, k) torch tensor, orthonormal right factor.
        n_iter_: sweeps run.
        history_: per-sweep history (see :class:`~optforge.matrix.altmin.CompletionResult`).
        shape_: fitted ``(n_samples, n_features)``.
        solver_: the solver used (``"exact"`` or ``"sketch"``).
        n_features_in_: number of features seen in ``fit``.
        feature_names_in_: feature names seen in ``fit`` (string column names only).
    """

    def __init__(
        self,
        rank: int = 10,
        *,
        n_iters: int = 20,
        solver: str = "auto",
        sketch: str = "countsketch",
        sketch_size: int | None = None,
        pcg_iters: int = 3,
        init: str = "svd",
        sample_splitting: bool = False,
        clip_mu: float | None = None,
        ridge: float = 0.0,
        tol: float = 1e-10,
        dtype: Any = "float64",
        device: Any = "cpu",
        backend: str = "auto",
        random_state: Any = None,
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
        self.backend = backend
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, *, shape: tuple[int, int] | None = None) -> Any:
        """Learn the factors ``U_`` and ``V_``.

        Args:
            X: (n_samples, n_features) array-like or tensor with NaN for missing entries, or
                ``(rows, cols, values)`` with ``shape``.
            y: ignored (scikit-learn convention).
            shape: ``(m, n)``, required for triplet input.

        Returns:
            ``self``.
        """
        self._validate_hyperparameters()
        rows, cols, vals, shp = self._fit_entries(X, shape)
        m, n = shp
        for name, size in (("n_samples", m), ("n_features", n)):
            if self.rank >= size:
                raise ValueError(
                    f"rank={self.rank} must be < min(n_samples, n_features); got {name} = {size}"
                )
        gen = make_generator(_seed(self.random_state), torch.device(self.device))
        solver = self.solver
        if solver == "auto":
            solver = choose_solver(
                self.rank, torch.bincount(cols, minlength=n), torch.bincount(rows, minlength=m)
            )
        result = robust_altmin_complete(
            rows,
            cols,
            vals,
            shp,
            self.rank,
            n_iters=self.n_iters,
            solver=self._solver(solver, gen),
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
        self.solver_ = solver
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit(X)``, then ``X`` with its NaN entries filled from the fitted ``U_ V_ᵀ``."""
        self.fit(X, y, **fit_params)
        if _is_triplet(X, fit_params.get("shape")):
            return self.reconstruct()
        dense = self._as_array(X)
        full = (self.U_ @ self.V_.T).cpu().double().numpy()
        return self._output(X, np.where(np.isnan(dense), full, dense))

    # ------------------------------------------------------------------ transform
    def transform(self, X: Any) -> Any:
        """Fill the NaN entries of the rows of ``X`` by fold-in against ``V_``.

        Each row's factor is the (ridge ``self.ridge``) least-squares fit of its observed
        entries on ``V_``; its missing entries are read from ``u V_ᵀ``, its observed entries are
        kept. A row with no observed entry gets ``u = 0`` (filled with zeros). Rows are
        independent: the result for a row does not depend on the others.

        Returns:
            A float64 numpy array (a tensor for tensor input).
        """
        check_is_fitted(self)
        dense = self._validate_new(X)
        u = self._fold_in(dense)
        full = (u @ self.V_.T).cpu().double().numpy()
        return self._output(X, np.where(np.isnan(dense), full, dense))

    def score(self, X: Any, y: Any = None, *, holdout: float = 0.2) -> float:
        """Negative RMSE of the fold-in on held-out observed entries of ``X`` (higher is better).

        A random share ``holdout`` of the observed entries of every row with at least two
        (seeded by ``random_state``) is hidden, each row is folded in on the rest, and the RMSE
        of the hidden entries is returned with a minus sign (scikit-learn maximises scores).
        """
        check_is_fitted(self)
        dense = self._validate_new(X)
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        observed = ~np.isnan(dense)
        # a stream of its own (not the one a user would draw a missing mask from with the seed)
        rng = np.random.default_rng([_seed(self.random_state) or 0, 0x5C0E])
        hide = observed & (rng.random(dense.shape) < holdout)
        keep_one = observed.sum(1) - hide.sum(1) < 1  # never hide a row's last observation
        hide[keep_one] = False
        if not hide.any():
            raise ValueError("score needs rows with at least two observed entries")
        u = self._fold_in(np.where(hide, np.nan, dense))
        pred = (u @ self.V_.T).cpu().double().numpy()
        return -float(np.sqrt(np.mean((pred[hide] - dense[hide]) ** 2)))

    def predict_entries(self, rows: Any, cols: Any) -> Any:
        """Completed values of the fitted (training) matrix ``U_ V_ᵀ`` at ``(rows[e], cols[e])``.

        ``rows`` and ``cols`` are integer arrays (or tensors) of the same shape, in
        ``[0, n_samples)`` and ``[0, n_features)``; O(len(rows)·k). Returns a numpy array (a
        tensor for tensor input).
        """
        check_is_fitted(self)
        r, c = (_as_index(a, name) for a, name in ((rows, "rows"), (cols, "cols")))
        if r.shape != c.shape:
            raise ValueError(f"rows and cols must have the same shape, got {r.shape}, {c.shape}")
        for name, idx, size in (("rows", r, self.shape_[0]), ("cols", c, self.shape_[1])):
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(
                    f"{name} must lie in [0, {size}), got range [{idx.min()}, {idx.max()}]"
                )
        dev = self.U_.device
        rt, ct = torch.from_numpy(r.reshape(-1)).to(dev), torch.from_numpy(c.reshape(-1)).to(dev)
        out = (self.U_[rt] * self.V_[ct]).sum(1).reshape(r.shape)
        if isinstance(rows, Tensor) or isinstance(cols, Tensor):
            return out
        return out.cpu().numpy()

    def predict(self, rows: Any, cols: Any = None) -> Any:
        """Deprecated: ``predict(rows, cols)`` is :meth:`predict_entries` and ``predict(X)`` is
        :meth:`transform` (scikit-learn reserves ``predict(X)`` for predictors); goes in the
        next release."""
        warnings.warn(
            "RobustAltMinCompletion.predict is deprecated: use predict_entries(rows, cols) for "
            "entries of the fitted matrix or transform(X) to complete rows; it goes in the next "
            "release",
            FutureWarning,
            stacklevel=2,
        )
        if cols is None:
            return self.transform(rows)
        out = self.predict_entries(rows, cols)
        return out if isinstance(out, Tensor) else torch.from_numpy(out)

    def reconstruct(self) -> Tensor:
        """The full completed training matrix ``U_ @ V_.T`` (dense, n_samples × n_features)."""
        check_is_fitted(self)
        return self.U_ @ self.V_.T

    # ------------------------------------------------------------------ helpers
    def _validate_hyperparameters(self) -> None:
        check_positive_int("rank", self.rank)
        check_positive_int("n_iters", self.n_iters)
        check_choice("solver", self.solver, ("auto", "sketch", "exact"))
        check_choice("sketch", self.sketch, _SKETCHES)
        if self.sketch_size is not None:
            check_positive_int("sketch_size", self.sketch_size)
        check_nonnegative_int("pcg_iters", self.pcg_iters)
        check_choice("init", self.init, ("svd", "random"))
        if self.clip_mu is not None:
            check_positive("clip_mu", self.clip_mu)
        check_nonnegative("ridge", self.ridge)
        check_nonnegative("tol", self.tol)
        check_choice("backend", self.backend, _SOLVER_BACKENDS)
        self._torch_dtype()

    def _torch_dtype(self) -> torch.dtype:
        if isinstance(self.dtype, torch.dtype):
            return self.dtype
        if self.dtype in ("float64", "float32", np.float64, np.float32):
            return getattr(torch, np.dtype(self.dtype).name)
        raise ValueError(f"dtype must be 'float64', 'float32' or a torch dtype, got {self.dtype!r}")

    def _solver(self, kind: str, gen: torch.Generator) -> MaskedLstsqSolver:
        if kind == "sketch":
            return SketchPreconditionedCG(
                sketch=self.sketch,
                sketch_size=self.sketch_size,
                max_iter=self.pcg_iters,
                generator=gen,
                backend=self.backend,
            )
        return ExactNormalEquations(backend=self.backend)

    def _fit_entries(
        self, X: Any, shape: tuple[int, int] | None
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        dev, dt = torch.device(self.device), self._torch_dtype()
        if _is_triplet(X, shape):
            assert shape is not None
            rows, cols, vals = (
                a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a)) for a in X
            )
            self.n_features_in_ = int(shape[1])
            return rows.to(dev), cols.to(dev), vals.to(dev, dt), (int(shape[0]), int(shape[1]))
        dense = validate_data(
            self,
            _numpy(X),
            reset=True,
            accept_sparse=False,
            dtype=np.float64,
            ensure_all_finite="allow-nan",
        )
        observed = ~np.isnan(dense)
        idx = torch.from_numpy(np.argwhere(observed)).to(dev)
        vals = torch.from_numpy(np.ascontiguousarray(dense[observed])).to(dev, dt)
        return idx[:, 0], idx[:, 1], vals, (dense.shape[0], dense.shape[1])

    def _validate_new(self, X: Any) -> np.ndarray:
        return validate_data(
            self,
            _numpy(X),
            reset=False,
            accept_sparse=False,
            dtype=np.float64,
            ensure_all_finite="allow-nan",
        )

    def _as_array(self, X: Any) -> np.ndarray:
        return np.array(_numpy(X), dtype=np.float64)

    def _fold_in(self, dense: np.ndarray) -> Tensor:
        """Each row's factor: ridge least squares of its observed entries on ``V_``."""
        v = self.V_
        n_rows = dense.shape[0]
        observed = ~np.isnan(dense)
        idx = np.argwhere(observed)
        u = v.new_zeros(n_rows, v.shape[1])
        if idx.size == 0:
            return u
        feats = torch.from_numpy(idx[:, 1]).to(v.device)
        samples = torch.from_numpy(idx[:, 0]).to(v.device)
        vals = torch.from_numpy(np.ascontiguousarray(dense[observed])).to(v.device, v.dtype)
        # ExactNormalEquations solves one regression per "column": here one per new row, with
        # the fixed factor V_ and the row's observed features as the design rows.
        solve = ExactNormalEquations(backend="auto" if self.backend == "padded" else self.backend)
        u = solve(v, feats, samples, vals, n_rows, ridge=float(self.ridge))
        return torch.where(torch.from_numpy(observed.any(1)).to(v.device)[:, None], u, 0.0)

    @staticmethod
    def _output(X: Any, out: np.ndarray) -> Any:
        if isinstance(X, Tensor):
            return torch.from_numpy(out).to(X.device)
        return out


def _seed(random_state: Any) -> int | None:
    """An int seed (or ``None``) from scikit-learn's ``random_state`` forms."""
    if random_state is None or isinstance(random_state, int | np.integer):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise ValueError(f"random_state must be an int, None or a RandomState, got {random_state!r}")


def _numpy(X: Any) -> Any:
    if isinstance(X, Tensor):
        return X.detach().cpu().numpy()
    return X


def _is_triplet(X: Any, shape: Any) -> bool:
    return shape is not None and isinstance(X, tuple | list) and len(X) == 3


def _as_index(a: Any, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.dtype.kind not in "iu":
        if (
            arr.dtype.kind == "f"
            and arr.size
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            arr = arr.astype(np.int64)
        elif arr.size:
            raise TypeError(f"{name} must be integer indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)
