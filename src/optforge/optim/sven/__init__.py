r"""Sven: Singular Value Descent, a truncated-SVD natural-gradient optimizer.

Paper: Samuel Bright-Thonney, Thomas R. Harvey, Andre Lukas, Jesse Thaler, "Sven: Singular Value
Descent as a Computationally Efficient Natural Gradient Method", arXiv:2604.01279 (2026).
Official code: github.com/sambt/sven.

Sven keeps the ``B`` per-example losses of a mini-batch as ``B`` separate *conditions* instead of
averaging them. Each condition's residual :math:`R_\alpha = \ell_\alpha^{\kappa/2}` is linearised
in the flat parameter vector :math:`\theta \in \mathbb R^P`, giving the per-example Jacobian
:math:`M_{\alpha i} = \partial R_\alpha / \partial\theta_i` (``B × P``). The step is the
minimum-norm least-squares solution of :math:`R + M\delta = 0`, through a *truncated*
pseudoinverse:

.. math::

    \theta \leftarrow \theta - \eta\, M_k^{+} R,\qquad
    M_k^{+} = V_r\,\mathrm{diag}(1/\sigma_1,\dots,1/\sigma_r)\,U_r^\top,\qquad
    r = \min\bigl(k,\ \#\{i : \sigma_i > \mathrm{rtol}\,\sigma_1,\ \sigma_i > \mathrm{tol}\}\bigr)

with :math:`M = U\Sigma V^\top` (singular values descending). When ``B ≥ P`` and ``M`` has full
column rank this is the Gauss–Newton step :math:`(M^\top M)^{-1}M^\top R`; when ``P > B`` it is
the minimum-norm ("function-space") natural gradient, which multiplies every linearised residual
by exactly :math:`1-\eta` per step. ``η = 1`` is a full Gauss–Newton/Newton–Raphson step.

One file per idea:

* :mod:`.direction` — :func:`sven_direction` (``M_k⁺R`` for a Jacobian you built),
  :func:`truncated_pinv_factors`, :class:`SvdInfo` and the Gram / full / randomized / lowrank
  solvers;
* :mod:`.jacobian` — the per-example residuals and Jacobian, from a model (``vmap``) or a
  closure (batched ``autograd.grad``);
* :mod:`.gram` — the Gram path: the ``B × B`` system ``JJᵀ`` from the layers' inputs and
  output gradients of one backward (no Jacobian), and ``data_parallel``'s all-gather;
* :mod:`.optimizer` — :class:`Sven`, the ``torch.optim`` optimizer (RMSProp, momentum,
  parameter subsampling, micro-batching, the automatic choice of path).

Example::

    model = nn.Sequential(nn.Linear(1, 16), nn.GELU(), nn.Linear(16, 1))
    optimizer = Sven(model.parameters(), lr=0.1, k=32)
    loss_fn = nn.MSELoss(reduction="none")
    for x, y in loader:
        mean_loss = optimizer.step(model=model, loss_fn=loss_fn, inputs=x, targets=y)
    # or: optimizer.step(lambda: loss_fn(model(x), y))   (per-example losses from a closure)
"""

from optforge.optim.sven.direction import (
    SOLVERS,
    Solver,
    SvdInfo,
    gram_direction_weights,
    sven_direction,
    truncated_pinv_factors,
)
from optforge.optim.sven.optimizer import Sven

__all__ = [
    "SOLVERS",
    "Solver",
    "SvdInfo",
    "Sven",
    "gram_direction_weights",
    "sven_direction",
    "truncated_pinv_factors",
]
