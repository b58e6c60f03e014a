"""AdAdaGrad: ``opt.backward(model, loss_fn, x, y)`` (per-example gradients for the batch-size
test) then ``opt.step()``, with the test due on every step (row ``step[...]/adadagrad``)."""

from __future__ import annotations

from collections.abc import Callable

from optforge.optim import AdAdaGrad
from optforge.repro.bench.step_time import StepProblem, register_step

__all__ = ["adadagrad"]


@register_step("adadagrad", order=50)
def adadagrad(problem: StepProblem) -> Callable[[], None]:
    """``AdAdaGrad(lr=0.01)`` from batch size 64; the batch size is reset so the test runs."""
    model = problem.model()
    opt = AdAdaGrad(model.parameters(), lr=0.01, initial_batch_size=64, max_batch_size=128)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        opt.backward(model, problem.mse, problem.x, problem.y)
        opt.step()
        opt.controller.batch_size = 64  # keep the test due every step

    return step
