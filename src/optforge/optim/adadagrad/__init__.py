r"""AdAdaGrad: adaptive batch sizes for adaptive gradient methods.

Paper: Tim Tsz-Kit Lau, Han Liu, Mladen Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for
Adaptive Gradient Methods", arXiv:2402.11215 (2024). Official code: ``timlautk/AdAdaGrad``.

A statistical test on the per-example gradients of the current batch proposes the batch size
:math:`\hat b` at which the minibatch gradient would be accurate enough; the next batch is
:math:`b_{k+1} = \min(b_{\max}, \max(b_k, \lceil \hat b \rceil))`. The optimizer update itself
is unchanged AdaGrad or AdaGrad-Norm. One file per idea:

=======================  ====================================================================
``grad_stats``           :class:`GradStats`: mergeable statistics of per-example gradients
``per_example``          :func:`per_sample_grads`, :func:`batch_grad_stats` (``torch.func``)
``batch_tests``          the five tests: :func:`norm_test`, :func:`inner_product_test`,
                         :func:`orthogonality_test`, :func:`augmented_inner_product_test`,
                         :func:`coordinate_norm_test`
``controller``           :class:`AdaptiveBatchSize`: the update rule and its state
``adagrad_norm``         :class:`AdaGradNorm`: the scalar-step-size AdaGrad
``adaptive_batch``       :class:`AdaptiveBatch`: any ``torch.optim`` optimizer + a controller
``optimizers``           :class:`AdAdaGrad`, :class:`AdAdaGradNorm`: the paper's two methods
=======================  ====================================================================

Example (``AdaptiveBatchSampler`` lives in ``optforge.data``; any sampler with
``set_batch_size`` works)::

    opt = AdAdaGrad(model.parameters(), lr=0.3, eta=1.0, initial_batch_size=2,
                    max_batch_size=len(dataset))
    sampler = AdaptiveBatchSampler(len(dataset), opt.batch_size, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    for x, y in loader:
        opt.zero_grad()
        loss = opt.backward(model, F.cross_entropy, x, y)  # per-example grads when a test is due
        opt.step()                                         # AdaGrad step, then the batch size
        sampler.set_batch_size(opt.batch_size)             # takes effect at the next batch
"""

from optforge.optim.adadagrad.adagrad_norm import AdaGradNorm, Granularity
from optforge.optim.adadagrad.adaptive_batch import AdaptiveBatch
from optforge.optim.adadagrad.batch_tests import (
    TESTS,
    TestName,
    augmented_inner_product_test,
    coordinate_norm_test,
    inner_product_test,
    norm_test,
    orthogonality_test,
)
from optforge.optim.adadagrad.controller import AdaptiveBatchSize
from optforge.optim.adadagrad.grad_stats import GradStats
from optforge.optim.adadagrad.optimizers import AdAdaGrad, AdAdaGradNorm
from optforge.optim.adadagrad.per_example import LossFn, batch_grad_stats, per_sample_grads

__all__ = [
    "TESTS",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaGradNorm",
    "AdaptiveBatch",
    "AdaptiveBatchSize",
    "GradStats",
    "Granularity",
    "LossFn",
    "TestName",
    "augmented_inner_product_test",
    "batch_grad_stats",
    "coordinate_norm_test",
    "inner_product_test",
    "norm_test",
    "orthogonality_test",
    "per_sample_grads",
]
