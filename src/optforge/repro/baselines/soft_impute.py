r"""SoftImpute: matrix completion by iterative soft-thresholded SVD (a baseline).

Mazumder, Hastie & Tibshirani, "Spectral Regularization Algorithms for Learning Large
Incomplete Matrices", JMLR 11 (2010) 2287–2322. SoftImpute solves the nuclear-norm regularised
completion problem

.. math::

    \min_Z \tfrac12 \|P_\Omega(M - Z)\|_F^2 + \lambda \|Z\|_*

by the fixed-point iteration

.. math::

    Z \leftarrow \mathrm{SVT}_\lambda\big(P_\Omega(M) + P_\Omega^\perp(Z)\big),\qquad
    \mathrm{SVT}_\lambda(X) = U \max(\Sigma - \lambda, 0) V^\top \ \text{for}\ X = U\Sigma V^\top,

filling the missing entries with the current estimate and soft-thresholding its singular values.
Here the SVD is a rank-``max_rank`` randomized SVD (scikit-learn's ``randomized_svd`` with 2
power iterations, as fancyimpute uses), the iteration at one λ stops once
``‖Z_new − Z‖²_F / ‖Z‖²_F < tol`` or after ``max_iters`` steps, and a decreasing path of λ is
run with warm starts (each λ starts from the previous λ's ``Z``; ``Z = 0`` at the first).
:func:`lambda_path` gives the usual path ``λ_i = start·‖P_Ω(M)‖₂·ratio^i``.

The computation is dense numpy on the CPU (O(mn·max_rank) per step). All randomness comes from
one ``numpy.random.RandomState(seed)`` shared by the successive randomized SVDs, so a seed fixes
the result. fancyimpute's ``SoftImpute`` would be the library pick, but fancyimpute 0.7.0 fails
on scikit-learn >= 1.8 (``check_array(force_all_finite=...)`` was removed).

Example:
    >>> import numpy as np
    >>> from optforge.repro.baselines import SoftImpute
    >>> rng = np.random.default_rng(0)
    >>> M = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 40))
    >>> X = np.where(rng.random(M.shape) < 0.6, M, np.nan)      # 60 % observed
    >>> est = SoftImpute(max_rank=4, n_lambdas=12, random_state=0).fit(X)
    >>> X_filled = est.transform(X)                             # observed entries kept
    >>> bool(np.abs(X_filled - M).max() < 0.5 * np.abs(M).max())
    True

The functional form runs the λ path and reports the factors after each λ::

    observed, mask = dense_observations(rows, cols, vals, (m, n))
    soft_impute_path(observed, mask, lambda_path(observed, 10), max_rank=2 * k, max_iters=50,
                     tol=1e-5, seed=0, on_lambda=lambda us, v: errors.append(err(us, v)))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from optforge._core import check_nonnegative, check_positive, check_positive_int

__all__ = ["SoftImpute", "dense_observations", "lambda_path", "soft_impute_path"]


def soft_impute_path(
    observed: np.ndarray,
    mask: np.ndarray,
    lambdas: Sequence[float],
    max_rank: int,
    max_iters: int,
    tol: float,
    seed: int,
    on_lambda: Callable[[np.ndarray, np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run SoftImpute along a warm-started path of regularisation strengths ``lambdas``.

    Args:
        observed: (m, n) float array holding ``M`` on the observed entries (any value elsewhere).
        mask: (m, n) boolean array, ``True`` on the observed entries Ω.
        lambdas: the path λ₁, λ₂, … (usually decreasing), each warm-started from the last.
        max_rank: rank of the randomized SVD.
        max_iters: maximum SVT steps per λ.
        tol: stop a λ once ``‖Z_new − Z‖²_F / ‖Z‖²_F < tol``.
        seed: seed of the ``numpy.random.RandomState`` used by every randomized SVD.
        on_lambda: called as ``on_lambda(U·s, V)`` at the end of each λ (the completion is
            ``(U·s) @ V.T``); e.g. to record an error path.

    Returns:
        ``(U·s, V)`` of the last λ: ``(m, max_rank)`` and ``(n, max_rank)`` arrays.
    """
    from sklearn.utils.extmath import randomized_svd

    if len(lambdas) == 0:
        raise ValueError("lambdas must contain at least one value")
    check_positive_int("max_rank", max_rank)
    check_positive_int("max_iters", max_iters)
    check_nonnegative("tol", tol)
    rng = np.random.RandomState(seed)
    z = np.zeros_like(observed)
    for lam in lambdas:
        for _ in range(max_iters):
            filled = np.where(mask, observed, z)
            u, s, vt = randomized_svd(filled, max_rank, n_iter=2, random_state=rng)
            s = np.maximum(s - lam, 0.0)
            z_new = (u * s) @ vt
            change = np.linalg.norm(z_new - z) ** 2 / max(np.linalg.norm(z) ** 2, 1e-300)
            z = z_new
            if change < tol:
                break
        if on_lambda is not None:
            on_lambda(u * s, vt.T)
    return u * s, vt.T


def lambda_path(
    observed: np.ndarray, n_lambdas: int = 10, start: float = 0.5, ratio: float = 0.5
) -> list[float]:
    """The geometric path ``λ_i = start·‖P_Ω(M)‖₂·ratio^i``, ``i = 0, …, n_lambdas − 1``.

    Args:
        observed: (m, n) zero-filled observed matrix ``P_Ω(M)``.
        n_lambdas: number of values.
        start: first λ as a fraction of the spectral norm of ``observed``.
        ratio: factor between successive values.
    """
    check_positive_int("n_lambdas", n_lambdas)
    check_positive("start", start)
    check_positive("ratio", ratio)
    lam0 = start * float(np.linalg.norm(observed, 2))
    return [lam0 * ratio**i for i in range(n_lambdas)]


def dense_observations(
    rows: Any, cols: Any, vals: Any, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The zero-filled observed matrix ``P_Ω(M)`` (float64) and the mask of Ω from triplets.

    ``rows``, ``cols``, ``vals`` may be numpy arrays or CPU torch tensors.
    """
    r, c, v = (np.asarray(a) for a in (rows, cols, vals))
    mask = np.zeros(shape, dtype=bool)
    mask[r, c] = True
    observed = np.zeros(shape)
    observed[r, c] = v
    return observed, mask


class SoftImpute:
    """SoftImpute with a scikit-learn style interface on a NaN-masked matrix.

    ``fit(X)`` runs :func:`soft_impute_path` on the non-NaN entries of ``X`` along
    ``lambdas`` (default :func:`lambda_path` of ``n_lambdas`` values) and keeps the completion of
    the last λ; ``transform(X)`` fills the NaN entries of ``X`` from it (observed entries kept).

    Args:
        max_rank: rank of the randomized SVD.
        lambdas: explicit λ path (overrides ``n_lambdas``, ``lambda_start``, ``lambda_ratio``).
        n_lambdas: length of the default path.
        lambda_start: first λ of the default path, as a fraction of ``‖P_Ω(M)‖₂``.
        lambda_ratio: factor between successive λ of the default path.
        max_iters: maximum SVT steps per λ.
        tol: relative-change stopping tolerance per λ.
        random_state: seed of the randomized SVDs.

    Attributes:
        U_: (m, max_rank) left factor scaled by the thresholded singular values.
        V_: (n, max_rank) right factor; the completion is ``U_ @ V_.T``.
        lambdas_: the λ path used.
        path_: ``(U·s, V)`` after each λ.
    """

    def __init__(
        self,
        max_rank: int,
        *,
        lambdas: Sequence[float] | None = None,
        n_lambdas: int = 10,
        lambda_start: float = 0.5,
        lambda_ratio: float = 0.5,
        max_iters: int = 50,
        tol: float = 1e-5,
        random_state: int = 0,
    ) -> None:
        self.max_rank = check_positive_int("max_rank", max_rank)
        self.lambdas = None if lambdas is None else [float(lam) for lam in lambdas]
        self.n_lambdas = check_positive_int("n_lambdas", n_lambdas)
        self.lambda_start = check_positive("lambda_start", lambda_start)
        self.lambda_ratio = check_positive("lambda_ratio", lambda_ratio)
        self.max_iters = check_positive_int("max_iters", max_iters)
        self.tol = check_nonnegative("tol", tol)
        self.random_state = random_state

    def fit(self, X: Any, y: None = None) -> SoftImpute:
        """Complete ``X`` ((m, n), NaN = missing) and store the factors; returns ``self``."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"X must be a 2-D matrix (NaN = missing), got {x.ndim}-D")
        mask = ~np.isnan(x)
        if not mask.any():
            raise ValueError("X has no observed entry")
        if not np.isfinite(x[mask]).all():
            raise ValueError("X contains infinite observed value(s)")
        observed = np.where(mask, x, 0.0)
        lambdas = self.lambdas
        if lambdas is None:
            lambdas = lambda_path(observed, self.n_lambdas, self.lambda_start, self.lambda_ratio)
        path: list[tuple[np.ndarray, np.ndarray]] = []
        self.U_, self.V_ = soft_impute_path(
            observed,
            mask,
            lambdas,
            self.max_rank,
            self.max_iters,
            self.tol,
            self.random_state,
            lambda us, v: path.append((us, v)),
        )
        self.lambdas_ = list(lambdas)
        self.path_ = path
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``X`` with its NaN entries replaced by the completion ``U_ @ V_.T``."""
        if not hasattr(self, "U_"):
            raise RuntimeError("this SoftImpute is not fitted yet; call fit first")
        x = np.asarray(X, dtype=np.float64)
        full = self.U_ @ self.V_.T
        if x.shape != full.shape:
            raise ValueError(f"X must be the fitted shape {full.shape}, got {x.shape}")
        return np.where(np.isnan(x), full, x)

    def fit_transform(self, X: Any, y: None = None) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)
