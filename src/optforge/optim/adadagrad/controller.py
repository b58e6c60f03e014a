r"""The batch-size controller: count steps, run the configured test, grow the batch.

After a step whose batch gave the statistics ``stats`` (:class:`GradStats`) and the test's
proposal :math:`\hat b` (see :mod:`optforge.optim.adadagrad.batch_tests`), the next batch is

.. math::

    b_{k+1} = \min\bigl(b_{\max},\ \max(b_k, \lceil \hat b \rceil)\bigr)
    \qquad\text{(never shrinks, capped).}

Edge cases: a batch of one example has no sample variance, so the test is skipped and the batch
size kept (``initial_batch_size`` must be >= 2 so the schedule can start); :math:`\hat b =
\infty` (e.g. :math:`g = 0`) moves the batch to ``max_batch_size``, or keeps it when there is no
cap, and ``last_test["skipped"]`` says why. The controller holds no model and no loop: it works
with any optimizer (see :class:`AdaptiveBatch`) or training framework.

Example (``x, y``: a batch of ``ctrl.batch_size`` examples)::

    ctrl = AdaptiveBatchSize("norm", eta=1.0, initial_batch_size=2, max_batch_size=len(data))
    stats = batch_grad_stats(model, F.cross_entropy, x, y)[0] if ctrl.should_test() else None
    ...                                        # the optimizer step
    sampler.set_batch_size(ctrl.update(stats))  # once per step; None: no test ran
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from optforge._core import check_choice, check_in_range, check_positive, check_positive_int
from optforge.optim.adadagrad.batch_tests import (
    TESTS,
    TestName,
    _augmented,
    _inner_product,
    _norm,
    _orthogonality,
    coordinate_norm_test,
)
from optforge.optim.adadagrad.grad_stats import GradStats

__all__ = ["AdaptiveBatchSize"]

_IP_TESTS = ("inner_product", "orthogonality", "augmented_inner_product")
_PARAMETERS = {
    "norm": ("eta",),
    "inner_product": ("theta",),
    "orthogonality": ("nu",),
    "augmented_inner_product": ("theta", "nu"),
}


class AdaptiveBatchSize:
    """The batch-size controller: framework-agnostic, no training loop inside.

    Args:
        test: one of :data:`TESTS`.
        eta: norm / coordinate-norm test parameter ``η > 0`` (official default 0.1; small, noisy
            data sets need larger values, e.g. 1.0 on digits).
        theta: inner-product test parameter (> 0).
        nu: orthogonality test parameter (> 0).
        initial_batch_size: ``b0 >= 2`` (one example has no sample variance).
        max_batch_size: the cap ``b_max >= b0`` (e.g. the data-set size); ``None``: no cap.
        test_interval: run the test every this many steps.
        coord_reduce: aggregation of the coordinate-wise test (see
            :func:`coordinate_norm_test`).
        q: quantile for ``coord_reduce="quantile"`` (see :func:`coordinate_norm_test`).
        min_denominator: ``‖g‖²`` (or ``g_j²``) below this counts as zero: ``b̂ = ∞``.
        process_group: the group whose ranks share the global batch (DDP).

    The controller only counts steps and applies the rule
    ``b ← min(b_max, max(b, ⌈b̂⌉))``: call :meth:`update` once per optimizer step with the
    batch's :class:`GradStats` (or ``None`` when no test ran).
    """

    # (test, eta, theta, nu) when the test's parameters were last checked (see proposal)
    _checked: tuple[Any, ...] = (None, None, None, None)

    def __init__(
        self,
        test: TestName = "norm",
        *,
        eta: float = 0.1,
        theta: float = 0.1,
        nu: float = 0.1,
        initial_batch_size: int = 8,
        max_batch_size: int | None = None,
        test_interval: int = 1,
        coord_reduce: Literal["max", "quantile"] = "max",
        q: float = 0.9,
        min_denominator: float = 1e-30,
        process_group: Any = None,
    ) -> None:
        check_choice("test", test, TESTS)
        check_positive("eta", eta)
        check_positive("theta", theta)
        check_positive("nu", nu)
        check_positive_int("initial_batch_size", initial_batch_size)
        if initial_batch_size < 2:
            raise ValueError(
                f"initial_batch_size must be >= 2 (one example has no sample variance, so the "
                f"test could never run), got {initial_batch_size}"
            )
        if max_batch_size is not None:
            check_positive_int("max_batch_size", max_batch_size)
            if max_batch_size < initial_batch_size:
                raise ValueError(
                    f"max_batch_size ({max_batch_size}) must be >= initial_batch_size "
                    f"({initial_batch_size})"
                )
        check_positive_int("test_interval", test_interval)
        check_choice("coord_reduce", coord_reduce, ("max", "quantile"))
        check_in_range("q", q, 0.0, 1.0)
        check_positive("min_denominator", min_denominator)
        self.test = test
        self.eta, self.theta, self.nu = float(eta), float(theta), float(nu)
        self.initial_batch_size = int(initial_batch_size)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.test_interval = int(test_interval)
        self.coord_reduce, self.q = coord_reduce, float(q)
        self.min_denominator = float(min_denominator)
        self.process_group = process_group
        self.batch_size = self.initial_batch_size
        self.step = 0
        self.last_test: dict[str, Any] = {}

    @property
    def needs_inner_product(self) -> bool:
        """Whether the test needs inner-product statistics (a ``ref`` direction)."""
        return self.test in _IP_TESTS

    def should_test(self, step: int | None = None) -> bool:
        """Whether the test runs at ``step`` (default: the current step)."""
        step = self.step if step is None else step
        capped = self.max_batch_size is not None and self.batch_size >= self.max_batch_size
        return not capped and step % self.test_interval == 0

    def proposal(self, stats: GradStats) -> float:
        """The raw proposal ``b̂`` (a float, possibly ``inf``) of the configured test."""
        test, floor = self.test, self.min_denominator
        if test == "coordinate_norm":
            return coordinate_norm_test(stats, self.eta, reduce=self.coord_reduce, q=self.q,
                                        min_denominator=floor)  # fmt: skip
        # the test's parameters are checked as norm_test & co. check them, once per new value
        values = (test, self.eta, self.theta, self.nu)
        if any(new is not old for new, old in zip(values, self._checked, strict=True)):
            for name in _PARAMETERS[test]:
                check_positive(name, getattr(self, name))
            self._checked = values
        if test == "norm":
            return _norm(stats, self.eta, floor)
        if test == "inner_product":
            return _inner_product(stats, self.theta, floor)
        if test == "orthogonality":
            return _orthogonality(stats, self.nu, floor)
        return _augmented(stats, self.theta, self.nu, floor)

    def propose(self, stats: GradStats) -> int:
        """The next batch size ``min(b_max, max(b, ⌈b̂⌉))`` (pure: no state changes)."""
        return self._next(stats)[0]

    def update(self, stats: GradStats | None) -> int:
        """Count one step; with ``stats``, apply the test. Returns the (new) batch size."""
        if stats is None:
            self.last_test = {"step": self.step, "tested": False, "batch_size": self.batch_size}
        else:
            new, info = self._next(stats)
            info.update(step=self.step, previous_batch_size=self.batch_size, batch_size=new)
            self.batch_size = new
            self.last_test = info
        self.step += 1
        return self.batch_size

    def _next(self, stats: GradStats) -> tuple[int, dict[str, Any]]:
        info: dict[str, Any] = {"tested": False, "test": self.test, "count": stats.count}
        b = self.batch_size
        if self.max_batch_size is not None and b >= self.max_batch_size:
            info["skipped"] = "at max_batch_size"
            return b, info
        if stats.count < 2:
            info["skipped"] = "fewer than 2 examples: no sample variance"
            return b, info
        b_hat = self.proposal(stats)
        info.update(
            tested=True,
            b_hat=b_hat,
            grad_sq_norm=stats.grad_sq_norm,
            trace_variance=stats.trace_variance,
        )
        if stats.ref is not None:
            info.update(
                ip_variance=stats.ip_variance, orth_trace_variance=stats.orth_trace_variance
            )
        if not math.isfinite(b_hat):
            if self.max_batch_size is None:
                info["skipped"] = "b_hat is infinite and there is no max_batch_size"
                return b, info
            return self.max_batch_size, info
        new = max(b, math.ceil(b_hat))
        if self.max_batch_size is not None:
            new = min(self.max_batch_size, new)
        return new, info

    def state_dict(self) -> dict[str, Any]:
        """Batch size, step counter and hyper-parameters (plain Python values)."""
        return {
            "batch_size": self.batch_size,
            "step": self.step,
            "test": self.test,
            "eta": self.eta,
            "theta": self.theta,
            "nu": self.nu,
            "initial_batch_size": self.initial_batch_size,
            "max_batch_size": self.max_batch_size,
            "test_interval": self.test_interval,
            "coord_reduce": self.coord_reduce,
            "q": self.q,
            "min_denominator": self.min_denominator,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the process group is not part of the state)."""
        for key in ("test", "eta", "theta", "nu", "initial_batch_size", "max_batch_size"):
            setattr(self, key, state[key])
        for key in ("test_interval", "coord_reduce", "q", "min_denominator"):
            setattr(self, key, state[key])
        self.batch_size = int(state["batch_size"])
        self.step = int(state["step"])
