r"""SSO: target-based surrogates for stochastic optimization.

Paper: Jonathan Wilder Lavington, Sharan Vaswani, Reza Babanezhad, Mark Schmidt, Nicolas Le Roux,
"Target-based Surrogates for Stochastic Optimization", ICML 2023, arXiv:2302.02607. Official code:
github.com/WilderLavington/Target-Based-Surrogates-For-Stochastic-Optimization.

Objectives of the form :math:`h(\theta) = \ell(f(\theta))` split into a cheap map :math:`f` from
parameters to **targets** :math:`z` (the logits of a model on a batch, a policy's actions on
visited states) and a loss :math:`\ell` on the targets whose gradient may be **expensive**
(expert queries, roll-outs, simulators). SSO spends one expensive gradient per outer step to
build a surrogate in target space and then takes ``m`` cheap parameter steps on it, on the same
batch. At outer step :math:`t`, with batch targets :math:`z_t = f_S(\theta_t)` (detached) and
:math:`\hat G_t = \nabla_z \ell_S(z_t)` (the one oracle call):

.. math::

    \tilde g_t(\theta) = \ell_S(z_t) + \langle \hat G_t, f_S(\theta) - z_t \rangle
        + \frac{w}{2\eta_t}\,\lVert f_S(\theta) - z_t \rVert^2 ,

with :math:`w = 1/b` for a loss that averages over the :math:`b` examples of the batch
(``loss_reduction="mean"``, the default) and :math:`w = 1` for a sum. Minimising over
:math:`\theta` projects the target-space SGD step :math:`z_t - \eta G` onto the targets the model
can produce. When every :math:`\ell_i` is :math:`L`-smooth in :math:`z_i` and
:math:`\eta \le 1/L` the full-batch surrogate upper-bounds :math:`h`, is tight at
:math:`\theta_t` and has the same gradient there, so the inner loop is a
majorisation–minimisation step (squared loss ½(z−y)²: L = 1; logistic loss on a logit: L = 1/4;
softmax cross-entropy on logits: L = 1/2).

One file per idea:

* :mod:`.surrogate` — :class:`TargetSurrogateLoss` and :func:`target_gradient` (the oracle call),
  usable with any ``torch.optim`` optimizer for the inner loop;
* :mod:`.target_step` — the target step :math:`\eta_t` (schedules, target-space line search,
  AdaGrad-norm);
* :mod:`.optimizer` — :class:`SSO`, the ``torch.optim`` optimizer with the Armijo inner loop.

Example::

    model = torch.nn.Linear(20, 3)
    opt = SSO(model.parameters(), target_lr=1.0, inner_steps=10)
    for x, y in loader:
        loss = opt.step(
            forward=lambda: model(x),                          # cheap: called up to m+1 times
            target_loss=lambda z: F.cross_entropy(z, y),       # "expensive": called once
        )
    opt.cost(oracle_cost=100.0)   # cost model: oracle calls vs forward passes

The oracle may also be a black box: ``opt.step(forward=..., target_grad=lambda z: G)`` (then
``step`` returns ``None``). A closure returning ``(forward, target_loss)`` works too. SSO never
reads or writes ``.grad`` (it uses ``torch.autograd.grad``). Keep the model in one mode
(``eval()`` or fixed dropout masks) during a step: the surrogate is tight at :math:`\theta_t` only
if every forward computes the same function.
"""

from optforge.optim.sso.optimizer import SSO
from optforge.optim.sso.surrogate import SumOrMean, TargetSurrogateLoss, target_gradient

__all__ = ["SSO", "SumOrMean", "TargetSurrogateLoss", "target_gradient"]
