"""Online learners: optimistic online mirror descent and its baselines.

Paper: Sijia Chen, Yu-Jie Zhang, Wei-Wei Tu, Peng Zhao, Lijun Zhang, "Optimistic Online Mirror
Descent for Bridging Stochastic and Adversarial Online Convex Optimization", ICML 2023,
arXiv:2302.04552.

* :mod:`~optforge.online.learners.base` — the predict/update protocol (:class:`OnlineLearner`);
* :mod:`~optforge.online.learners.omd` — optimistic OMD (:class:`OptimisticOMD`,
  :class:`OptimisticOGD`), the paper's method;
* :mod:`~optforge.online.learners.baselines` — :class:`OGD`, :class:`FTRL`,
  :class:`OptimisticFTRL`;
* :mod:`~optforge.online.learners.ons` — :class:`OptimisticONS` and :class:`ONS` for
  exp-concave losses;
* :mod:`~optforge.online.learners.ensemble` — :class:`OptimisticEnsemble` for dynamic regret.

Example::

    import torch
    from optforge.online import Ball, OptimisticOGD

    learner = OptimisticOGD(torch.zeros(10), Ball(1.0), smoothness=1.0)
    for c in targets:                      # f_t(x) = ½‖x − c_t‖²
        x = learner.predict()
        learner.update(x - c)
"""

from optforge.online.learners.base import OnlineLearner
from optforge.online.learners.baselines import FTRL, OGD, OptimisticFTRL
from optforge.online.learners.ensemble import OptimisticEnsemble, ensemble_step_sizes
from optforge.online.learners.omd import OptimisticOGD, OptimisticOMD
from optforge.online.learners.ons import ONS, OptimisticONS

__all__ = [
    "FTRL",
    "OGD",
    "ONS",
    "OnlineLearner",
    "OptimisticEnsemble",
    "OptimisticFTRL",
    "OptimisticOGD",
    "OptimisticOMD",
    "OptimisticONS",
    "ensemble_step_sizes",
]
