r"""The Sven direction ``d = M_k⁺ R``: a truncated pseudoinverse of the per-example Jacobian.

With :math:`M = U\Sigma V^\top` (singular values descending),

.. math::

    M_k^{+} = V_r\,\mathrm{diag}(1/\sigma_1,\dots,1/\sigma_r)\,U_r^\top,\qquad
    r = \min\bigl(k,\ \#\{i : \sigma_i > \mathrm{rtol}\,\sigma_1,\ \sigma_i > \mathrm{tol}\}\bigr).

Solvers (``method=``), all returning the same truncated pseudoinverse:

* ``"gram"`` (default): eigendecomposition (``torch.linalg.eigh``) of the smaller Gram matrix,
  :math:`G = MM^\top` (``B × B``, when ``P ≥ B``) or :math:`M^\top M`. The step is then
  :math:`M^\top U_r\,\mathrm{diag}(1/\sigma_i^2)\,U_r^\top R` and ``V`` is never formed. Forming
  ``G`` squares the condition number, so run it in float64. Because ``eigh`` resolves
  :math:`\sigma^2` only to about :math:`n\,\epsilon\,\sigma_1^2`, the Gram-based solvers raise
  ``rtol`` to at least :math:`\sqrt{n\,\epsilon}` (``n = max(B, P)``, ``ε`` the dtype's machine
  epsilon; ≈ 1e-7 in float64): smaller singular values are noise.
* ``"full"``: thin SVD (``torch.linalg.svd``), then truncation.
* ``"randomized"``: Halko–Martinsson–Tropp randomized range finder with ``oversample`` extra
  columns and ``power_iters`` QR-stabilised power iterations, followed by the Gram eigensolve of the
  small projected matrix (the official code's "randomized_v2"); its Gaussian test matrix comes
  from the given ``torch.Generator``.
* ``"lowrank"``: ``torch.svd_lowrank`` (same algorithm, torch's implementation), run inside
  ``torch.random.fork_rng`` with a seed drawn from the given generator so the global RNG stream
  is left untouched.

``rtol`` must lie in (0, 1); use e.g. ``1e-12`` for "no relative cut".

Example::

    d, info = sven_direction(M, R, k=8, rtol=1e-3)   # == pinv(M) @ R when k >= rank(M)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_device,
    check_floating,
    check_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_not_meta,
    check_positive_int,
    make_generator,
)

__all__ = ["SOLVERS", "Solver", "SvdInfo", "sven_direction", "truncated_pinv_factors"]

Solver = Literal["gram", "full", "randomized", "lowrank"]
SOLVERS: tuple[str, ...] = ("gram", "full", "randomized", "lowrank")


@dataclass(frozen=True)
class SvdInfo:
    """Diagnostics of one truncated pseudoinverse.

    Attributes:
        singular_values: the singular values the solver computed, descending (all of them for
            ``"gram"``/``"full"``, the top ``k + oversample`` for the randomized solvers).
        rank: the number of directions used, ``r``.
        sigma_max: the largest singular value (0 for a zero Jacobian).
        sigma_min_kept: the smallest singular value used (``nan`` when ``rank == 0``).
        num_conditions: rows of ``M`` (``B``, or ``B / microbatch_size``, or ``B·m``).
        num_params: columns of ``M`` (parameters, after subsampling).
    """

    singular_values: Tensor
    rank: int
    sigma_max: float
    sigma_min_kept: float
    num_conditions: int
    num_params: int


def truncated_pinv_factors(
    M: Tensor,
    k: int | None = None,
    rtol: float = 1e-3,
    tol: float = 1e-10,
    method: Solver = "gram",
    *,
    oversample: int = 5,
    power_iters: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor | None, Tensor, Tensor | None, Tensor]:
    """Truncated SVD factors ``(U_r, σ_r, V_r, σ_all)`` of ``M`` (computed in ``M``'s dtype).

    ``U_r`` (``B × r``) or ``V_r`` (``P × r``) may be ``None`` when the solver does not form it
    (``"gram"`` forms only the side of the smaller Gram matrix; the randomized solvers only
    ``U``); :func:`sven_direction` uses whichever is available. Arguments as in
    :func:`sven_direction`.
    """
    _check_solver_args(M, k, rtol, tol, method, oversample, power_iters)
    n_rows, n_cols = M.shape
    full_rank = min(n_rows, n_cols)
    k_eff = full_rank if k is None else min(k, full_rank)
    U: Tensor | None
    V: Tensor | None
    if method == "gram":
        if n_rows <= n_cols:
            U, sigma = _eigh_desc(M @ M.T)
            V = None
        else:
            V, sigma = _eigh_desc(M.T @ M)
            U = None
    elif method == "full":
        U, sigma, Vh = torch.linalg.svd(M, full_matrices=False)
        V = Vh.mT
    elif method == "randomized":
        U, sigma = _randomized_left(M, min(k_eff + oversample, full_rank), power_iters, generator)
        V = None
    else:  # "lowrank"
        q = min(k_eff + oversample, full_rank)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator else 0
        devices = [M.device] if M.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=M.device.type):
            torch.manual_seed(seed)
            U, sigma, V = torch.svd_lowrank(M, q=q, niter=power_iters)
    r = _truncation_rank(sigma, k_eff, rtol, tol, method, max(n_rows, n_cols), M.dtype)
    U_r = None if U is None else U[:, :r]
    V_r = None if V is None else V[:, :r]
    return U_r, sigma[:r], V_r, sigma


def sven_direction(
    M: Tensor,
    R: Tensor,
    k: int | None = None,
    rtol: float = 1e-3,
    tol: float = 1e-10,
    method: Solver = "gram",
    *,
    oversample: int = 5,
    power_iters: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, SvdInfo]:
    """The Sven direction ``d = M_k⁺ R`` (the step is ``θ ← θ − η d``) for a Jacobian you built.

    Args:
        M: Jacobian of the residuals, shape ``(B, P)``; the solve runs in ``M``'s dtype (pass
            float64 for the ``"gram"`` solver unless the spectrum is benign).
        R: residuals, shape ``(B,)``.
        k: maximum number of singular directions kept (``None``: all).
        rtol: relative cut-off in (0, 1): directions with ``σ_i ≤ rtol·σ_max`` are dropped.
        tol: absolute floor: directions with ``σ_i ≤ tol`` are dropped.
        method: ``"gram"``, ``"full"``, ``"randomized"`` or ``"lowrank"`` (module docstring).
        oversample: extra columns of the randomized solvers' sketch.
        power_iters: power iterations of the randomized solvers.
        generator: random source of the randomized solvers (default: a fresh generator seeded
            from ``torch.initial_seed()``; the global stream is never consumed).

    Returns:
        ``(d, info)``: ``d`` has shape ``(P,)`` and ``M``'s dtype; ``info`` is a :class:`SvdInfo`.

    Example::

        d, info = sven_direction(M, R, k=8, rtol=1e-3)   # == pinv(M) @ R when k >= rank(M)
    """
    if not isinstance(M, Tensor) or M.dim() != 2:
        raise ValueError(f"M must be a 2-D tensor (B, P), got {_shape(M)}")
    if not isinstance(R, Tensor) or R.shape != (M.shape[0],):
        raise ValueError(f"R must have shape ({M.shape[0]},) to match M, got {_shape(R)}")
    check_not_meta("M", M)
    check_not_meta("R", R)
    check_device("R", R, M.device, owner="M")
    check_floating("M", M, allow_half=False)
    check_floating("R", R)
    if M.shape[0] == 0:
        raise ValueError("M has no rows (an empty batch of conditions)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not torch.isfinite(M).all():
        raise ValueError("M contains non-finite values (NaN or inf)")
    if not torch.isfinite(R).all():
        raise ValueError("R contains non-finite values (NaN or inf)")
    if generator is None and method in ("randomized", "lowrank"):
        generator = make_generator(None)
    R = R.to(M.dtype)
    U_r, s_r, V_r, sigma = truncated_pinv_factors(
        M,
        k,
        rtol,
        tol,
        method,
        oversample=oversample,
        power_iters=power_iters,
        generator=generator,
    )
    if s_r.numel() == 0:
        d = M.new_zeros(M.shape[1])
    elif U_r is not None and V_r is not None:
        d = V_r @ ((U_r.T @ R) / s_r)
    elif U_r is not None:
        d = M.T @ (U_r @ ((U_r.T @ R) / s_r**2))
    else:
        assert V_r is not None
        d = V_r @ ((V_r.T @ (M.T @ R)) / s_r**2)
    info = SvdInfo(
        singular_values=sigma.detach(),
        rank=int(s_r.numel()),
        sigma_max=float(sigma[0]) if sigma.numel() else 0.0,
        sigma_min_kept=float(s_r[-1]) if s_r.numel() else math.nan,
        num_conditions=int(M.shape[0]),
        num_params=int(M.shape[1]),
    )
    return d, info


def gram_direction_weights(
    gram: Tensor,
    R: Tensor,
    n_params: int,
    k: int | None = None,
    rtol: float = 1e-3,
    tol: float = 1e-10,
) -> tuple[Tensor, SvdInfo]:
    """The ``"gram"`` solver from the Gram matrix alone: ``c`` with ``M_k⁺R = Mᵀc``.

    For ``G = MMᵀ`` (``B × B``, ``B ≤ P = n_params``) this is
    ``c = U_r diag(1/σ_i²) U_rᵀ R`` with the truncation of :func:`truncated_pinv_factors`
    (same ``k``, ``rtol``, ``tol`` and noise floor), so ``Mᵀc`` equals
    ``sven_direction(M, R, k, rtol, tol, "gram")[0]`` without ``M`` ever being formed: the
    optimizer's Gram path (:mod:`.gram`) builds ``G`` from ghost factors and ``Mᵀc`` as one
    weighted sum of per-example gradients.

    Returns:
        ``(c, info)``: ``c`` has shape ``(B,)`` and ``gram``'s dtype.
    """
    n = gram.shape[0]
    if gram.shape != (n, n) or n == 0 or n > n_params:
        raise ValueError(
            f"gram must be a non-empty square (B, B) matrix with B <= n_params={n_params}, "
            f"got {_shape(gram)}"
        )
    U, sigma = _eigh_desc(gram)
    k_eff = n if k is None else min(k, n)
    r = _truncation_rank(sigma, k_eff, rtol, tol, "gram", max(n, n_params), gram.dtype)
    U_r, s_r = U[:, :r], sigma[:r]
    R = R.to(gram.dtype)
    c = U_r @ ((U_r.T @ R) / s_r**2) if r else gram.new_zeros(n)
    info = SvdInfo(
        singular_values=sigma.detach(),
        rank=r,
        sigma_max=float(sigma[0]),
        sigma_min_kept=float(s_r[-1]) if r else math.nan,
        num_conditions=n,
        num_params=int(n_params),
    )
    return c, info


# -------------------------------------------------------------------------------------------------
# Private helpers


def _truncation_rank(
    sigma: Tensor, k_eff: int, rtol: float, tol: float, method: str, n: int, dtype: torch.dtype
) -> int:
    """How many of the (descending) ``sigma`` the truncated pseudoinverse keeps."""
    sigma_max = sigma[0] if sigma.numel() else sigma.new_zeros(())
    if method in ("gram", "randomized"):
        # eigh of a Gram matrix resolves σ² only down to ~n·eps·σ_max²: below that, σ is noise
        noise_floor = math.sqrt(max(n, 1) * torch.finfo(dtype).eps)
        rtol = max(rtol, noise_floor)
    keep = (sigma > rtol * sigma_max) & (sigma > tol)
    keep[k_eff:] = False
    return int(keep.sum())  # kept entries are a prefix: sigma is descending


def _eigh_desc(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvectors and ``sqrt`` of the eigenvalues of a PSD Gram matrix, descending."""
    evals, evecs = torch.linalg.eigh(gram)
    return evecs.flip(-1), evals.flip(-1).clamp_min(0.0).sqrt()


def _randomized_left(
    M: Tensor, width: int, power_iters: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Left singular vectors and values of ``M`` from a randomized range finder (Halko et al.)."""
    device = generator.device if generator is not None else M.device
    omega = torch.randn(M.shape[1], width, generator=generator, dtype=M.dtype, device=device)
    Q = torch.linalg.qr(M @ omega.to(M.device)).Q
    for _ in range(power_iters):
        Z = torch.linalg.qr(M.T @ Q).Q
        Q = torch.linalg.qr(M @ Z).Q
    small = Q.T @ M  # width × P
    W, sigma = _eigh_desc(small @ small.T)
    return Q @ W, sigma


def _check_solver_args(
    M: Tensor,
    k: int | None,
    rtol: float,
    tol: float,
    method: str,
    oversample: int,
    power_iters: int,
) -> None:
    if k is not None:
        check_positive_int("k", k)
    check_in_range("rtol", rtol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_nonnegative("tol", tol)
    check_choice("method", method, SOLVERS)
    check_nonnegative_int("oversample", oversample)
    check_nonnegative_int("power_iters", power_iters)
    if M.dim() != 2:
        raise ValueError(f"M must be a 2-D tensor (B, P), got {_shape(M)}")


def _shape(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
