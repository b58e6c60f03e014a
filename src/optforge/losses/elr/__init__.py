"""Early-learning regularization (ELR) for noisy labels, the ELR+ pieces, and two baselines.

Paper: Sheng Liu, Jonathan Niles-Weed, Narges Razavian, Carlos Fernandez-Granda,
"Early-Learning Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020,
arXiv:2007.00151. Official code: ``shengliu66/ELR``.

* :mod:`~optforge.losses.elr.loss` — :class:`ELRLoss` and its functional core
  (:func:`elr_regularizer`, :func:`update_ema_targets_`);
* :mod:`~optforge.losses.elr.ema` — :class:`ModelEMA` (mean teacher) and :func:`sigmoid_rampup`;
* :mod:`~optforge.losses.elr.plus` — :class:`ELRPlusLoss` and :func:`mixup_batch`;
* :mod:`~optforge.losses.elr.baselines` — :class:`GCELoss` and :class:`SCELoss`.

Example::

    criterion = ELRLoss(num_examples=len(train_set), num_classes=10, lam=3.0, beta=0.7)
    for x, y, index in loader:          # optforge.data.IndexedDataset yields the index
        loss = criterion(model(x), y, index)
        opt.zero_grad(); loss.backward(); opt.step()
"""

from optforge.losses.elr.baselines import GCELoss, SCELoss
from optforge.losses.elr.ema import ModelEMA, sigmoid_rampup
from optforge.losses.elr.loss import ELRLoss, elr_regularizer, update_ema_targets_
from optforge.losses.elr.plus import ELRPlusLoss, mixup_batch

__all__ = [
    "ELRLoss",
    "ELRPlusLoss",
    "GCELoss",
    "ModelEMA",
    "SCELoss",
    "elr_regularizer",
    "mixup_batch",
    "sigmoid_rampup",
    "update_ema_targets_",
]
