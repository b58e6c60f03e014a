"""The exact variance of the CRS and WTA-CRS estimates of a matrix product, in closed form.

For ``XY = Σ_i X[:, i] Y[i, :]`` (``m`` column-row pairs), write ``a_i = ‖X[:, i]‖·‖Y[i, :]‖``
(the Frobenius norm of the ``i``-th outer product). With scores ``p``, winners ``C`` (as the
sampler chooses them), residual mass ``R = Σ_{j∉C} p_j``, ``q_j = p_j/R`` and ``s = k − |C|``
i.i.d. draws, the estimate is ``Σ_{c∈C} X_c Y_c + (1/s) Σ_t X_{j_t} Y_{j_t} / q_{j_t}`` and

$$ \\mathbb E\\,\\|\\widehat{XY} - XY\\|_F^2
   = \\frac1s\\Big(\\sum_{j\\notin C}\\frac{a_j^2}{q_j}
     - \\Big\\|\\sum_{j\\notin C} X_{:,j} Y_{j,:}\\Big\\|_F^2\\Big), $$

the variance of the mean of ``s`` i.i.d. copies of the one-draw estimate of the residual
product; the winners add nothing. CRS is the case ``C = ∅``, ``s = k`` (Drineas–Kannan–Mahoney;
``p ∝ a`` minimises it). Being exact, this is the variance the reproduction reports: a ratio of two
closed forms has no Monte-Carlo noise, and the tests check it against Monte-Carlo draws.

Example:
    >>> import torch
    >>> from optforge.nn.wta_crs import expected_squared_error
    >>> x, y = torch.randn(8, 64, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64)
    >>> float(expected_squared_error(x, y, 64))  # k = m: exact
    0.0
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from optforge.nn.wta_crs.sampling import _default_probs, _positive, n_winners

__all__ = ["expected_squared_error"]


def expected_squared_error(
    x: Tensor,
    y: Tensor,
    k: int,
    *,
    method: Literal["wta", "crs", "uniform"] = "wta",
    probs: Tensor | None = None,
) -> Tensor:
    """``E‖approx_matmul(x, y, k, method=method, probs=probs) − x @ y‖_F²``, exactly.

    Args:
        x: Left factor ``(n, m)``.
        y: Right factor ``(m, q)``.
        k: Number of sampled pairs.
        method: ``"wta"`` (adaptive winners), ``"crs"`` or ``"uniform"``.
        probs: Sampling scores ``(m,)``; default ``‖x[:, i]‖ · ‖y[i, :]‖``.

    Returns:
        A 0-d float64 tensor (computed in float64; winners chosen with the sampler's own
        arithmetic, :func:`~optforge.nn.wta_crs.n_winners`).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[0]:
        raise ValueError(
            f"x and y must be matrices with x.shape[1] == y.shape[0], got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    m = x.shape[1]
    if k >= m:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    scores = _default_probs(x, y, method, probs)
    n_win = n_winners(scores, k, method="wta" if method == "wta" else "crs")
    p = _positive(scores.double())
    rest = torch.ones(m, dtype=torch.bool, device=x.device)
    if n_win:
        top = torch.topk(scores.double(), n_win).indices
        rest[top] = False
    x64, y64 = x.double()[:, rest], y.double()[rest]
    q = p[rest] / p[rest].sum()
    a = torch.linalg.vector_norm(x64, dim=0) * torch.linalg.vector_norm(y64, dim=1)
    return ((a**2 / q).sum() - (x64 @ y64).pow(2).sum()) / (k - n_win)
