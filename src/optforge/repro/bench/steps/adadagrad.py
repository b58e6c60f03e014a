"""AdAdaGrad: ``opt.backward(model, loss_fn, x, y)`` then ``opt.step()``, with the batch-size test
due on every step, against a plain ``torch.optim.Adagrad`` step on the same MLP.

Rows (``step[...]/<name>``, ratios to Adam like every row; divide two rows for the ratio to
plain Adagrad, e.g. ``adadagrad / adagrad``):

* ``adagrad``: ``torch.optim.Adagrad(lr=0.01)`` in the ``loss.backward(); opt.step()`` form
  (the base optimizer, no test);
* ``adadagrad``: the norm test with the default ``method="auto"`` statistics (ghost norms from
  one batched backward: this MLP has only ``nn.Linear`` layers), the loss given as
  ``nn.MSELoss()`` on the ``(batch, 1)`` predictions and targets (the same values as the other
  rows' ``F.mse_loss(pred.squeeze(-1), y)``), so the per-example losses come from one
  ``reduction="none"`` call;
* ``adadagrad_ip``: the augmented inner-product test (norm + inner products with the mean), ghost,
  ``nn.MSELoss()`` as above;
* ``adadagrad_callable``: the norm test, ghost, with the loss as an opaque callable (the other
  rows' ``F.mse_loss(pred.squeeze(-1), y)``): the per-example losses then go through
  ``torch.func.vmap`` over the callable;
* ``adadagrad_per_example``: the norm test with ``method="per_example"`` (``torch.func``
  per-example gradients: the implementation before the ghost path, kept as the reference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from optforge.optim import AdAdaGrad
from optforge.repro.bench.step_time import StepProblem, first_order_step, register_step

__all__ = [
    "adadagrad",
    "adadagrad_callable",
    "adadagrad_ip",
    "adadagrad_per_example",
    "adagrad",
]


def _adadagrad_step(
    problem: StepProblem, *, stock_loss: bool = True, **kwargs: object
) -> Callable[[], None]:
    model = problem.model()
    opt = AdAdaGrad(
        model.parameters(), lr=0.01, initial_batch_size=64, max_batch_size=128, **kwargs
    )
    if stock_loss:  # nn.MSELoss on (batch, 1): the values of problem.mse
        loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.MSELoss()
        targets = problem.y.unsqueeze(-1)
    else:
        loss_fn, targets = problem.mse, problem.y

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        opt.backward(model, loss_fn, problem.x, targets)
        opt.step()
        opt.controller.batch_size = 64  # keep the test due every step

    return step


@register_step("adagrad", order=48)
def adagrad(problem: StepProblem) -> Callable[[], None]:
    """``torch.optim.Adagrad(lr=0.01)``: AdAdaGrad's base step without the test."""
    return first_order_step(problem, lambda m: torch.optim.Adagrad(m.parameters(), lr=0.01))


@register_step("adadagrad", order=50)
def adadagrad(problem: StepProblem) -> Callable[[], None]:
    """``AdAdaGrad(lr=0.01)`` (norm test, ghost statistics) from batch size 64, test every step."""
    return _adadagrad_step(problem)


@register_step("adadagrad_ip", order=51)
def adadagrad_ip(problem: StepProblem) -> Callable[[], None]:
    """``AdAdaGrad(test="augmented_inner_product")`` (ghost statistics), test every step."""
    return _adadagrad_step(problem, test="augmented_inner_product")


@register_step("adadagrad_callable", order=52)
def adadagrad_callable(problem: StepProblem) -> Callable[[], None]:
    """``AdAdaGrad(lr=0.01)`` (norm test, ghost statistics) with an opaque loss callable: the
    per-example losses through ``torch.func.vmap``."""
    return _adadagrad_step(problem, stock_loss=False)


@register_step("adadagrad_per_example", order=53)
def adadagrad_per_example(problem: StepProblem) -> Callable[[], None]:
    """``AdAdaGrad(method="per_example")``: the norm test from ``torch.func`` per-example
    gradients (the reference implementation)."""
    return _adadagrad_step(problem, stock_loss=False, method="per_example")
