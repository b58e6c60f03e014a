r"""Gradient-regularized Newton with approximate Hessians (gradient-normalized smoothness).

Paper: Andrei Semenov, Martin Jaggi, Nikita Doikov, "Gradient-Normalized Smoothness for
Optimization with Approximate Hessians", arXiv:2506.13710 (2025). Official code:
github.com/epfml/grad-norm-smooth (NumPy; ``src/methods.py``, "Algorithm 1").

Given an approximation ``H(x)`` of the Hessian (exact, lazy, subsampled, a fixed bound,
Gauss–Newton, Fisher, ... — see :mod:`.hessian_approx`) and a fixed SPD metric ``B`` (identity
by default) with norms ``‖h‖ = (hᵀBh)^{1/2}`` and ``‖g‖_* = (gᵀB⁻¹g)^{1/2}``, one outer
iteration is

.. math::

    λ = \max\Big(\frac{‖∇f(x)‖_*}{γ + ε},\ λ_{\min}\Big),\qquad
    x^+ = x − (H(x) + λB)^{-1}∇f(x),

accepted when ``f(x) − f(x⁺) ≥ ‖∇f(x⁺)‖_*² / (8λ)`` (Algorithm 1); on acceptance
``γ ← max(2γ, γ_min)``, on rejection ``γ ← γ/2`` and the trial is repeated. ``γ`` estimates the
paper's gradient-normalized smoothness, the radius on which the model ``∇f(x) + H(x)(y − x)``
predicts ``∇f(y)`` to a fraction of ``‖∇f(x)‖_*``; the error of ``H`` only enters through it,
so approximate Hessians keep fast global rates (linear for logistic / softmax regression).

One file per idea:

* :mod:`.step` — :func:`regularized_newton_step` and the Cholesky / CG / Sherman–Morrison
  solvers of ``(H + λB)δ = −g``;
* :mod:`.search` — the adaptive search over γ (Algorithm 1's inner loop) and its choices;
* :mod:`.minimize` — :func:`gns_minimize`, the functional full-batch solver, and
  :class:`GNSResult`;
* :mod:`.optimizer` — :class:`GradNormSmoothNewton`, the ``torch.optim`` form;
* :mod:`.hessian_approx` — the pluggable Hessian approximations (also importable as
  ``optforge.optim.hessian_approx``).

Example::

    A, b = torch.randn(200, 100, dtype=torch.float64), torch.randn(200, dtype=torch.float64)
    f = lambda x: 0.25 * torch.logsumexp((A @ x - b) / 0.25, dim=0)
    res = gns_minimize(f, torch.ones(100, dtype=torch.float64),
                       hessian=WeightedGaussNewtonLSE(A, b, 0.25), gtol=1e-9)

    model = torch.nn.Linear(5, 1).double()
    opt = GradNormSmoothNewton(model.parameters(), hessian="exact")
    for _ in range(20):
        opt.step(lambda: torch.nn.functional.mse_loss(model(X), y))   # no backward needed
"""

from optforge.optim.regularized_newton.minimize import GNSResult, gns_minimize
from optforge.optim.regularized_newton.optimizer import GradNormSmoothNewton
from optforge.optim.regularized_newton.step import Solver, regularized_newton_step

__all__ = [
    "GNSResult",
    "GradNormSmoothNewton",
    "Solver",
    "gns_minimize",
    "regularized_newton_step",
]
