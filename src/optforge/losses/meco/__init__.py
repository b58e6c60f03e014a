"""MECO: unnormalized statistical models by compositional optimization, with NCE baselines.

Paper: *Learning Unnormalized Statistical Models via Compositional Optimization*, Wei Jiang,
Jiayu Qin, Lingyu Wu, Changyou Chen, Tianbao Yang, Lijun Zhang (ICML 2023, arXiv:2306.07485).

* :mod:`~optforge.losses.meco.loss` — :class:`MECOLoss` and :func:`meco_momentum_sgd`;
* :mod:`~optforge.losses.meco.nce` — the :class:`NCELoss` and :class:`ENCELoss` baselines;
* :mod:`~optforge.losses.meco.energy` — the energy convention and :func:`grid_log_partition`;
* :mod:`~optforge.losses.meco.noise` — noise sampling and :func:`fit_gaussian_noise`.

Example::

    noise = torch.distributions.MultivariateNormal(torch.zeros(2), 4 * torch.eye(2))
    loss_fn = MECOLoss(noise, gamma=0.1, seed=0)
    loss_fn(energy_net, x).backward()   # energy_net(x) -> f(x), shape (B,)
"""

from optforge.losses.meco.energy import grid_log_partition
from optforge.losses.meco.loss import ESS_WARN_FRACTION, MECOLoss, meco_momentum_sgd
from optforge.losses.meco.nce import ENCELoss, NCELoss
from optforge.losses.meco.noise import fit_gaussian_noise

__all__ = [
    "ESS_WARN_FRACTION",
    "ENCELoss",
    "MECOLoss",
    "NCELoss",
    "fit_gaussian_noise",
    "grid_log_partition",
    "meco_momentum_sgd",
]
