"""``check_optimizer``: the conformance suite every optimizer in optforge passes.

The checks follow torch's own ``OptimizerInfo`` tests and scikit-learn's ``check_estimator``:

========================  ===================================================================
``downhill``              20 steps on a small linear-regression model lower the loss; a
                          closure's loss is returned by ``step``
``quadratic``             converges on a diagonal quadratic (condition number 10) within
                          ``quadratic.tol`` in ``quadratic.steps`` steps
``rosenbrock``            converges on Rosenbrock's function from (-1.5, 2) within tolerance
``state_dict``            a ``state_dict`` taken mid-run, passed through ``torch.save`` /
                          ``torch.load`` and loaded into a fresh optimizer continues
                          bit-identically
``param_groups``          two param groups with different hyper-parameters behave like two
                          optimizers
``lr_scheduler``          a scheduler's learning rate is the one the step uses (lr 0 ⇒ no move)
``dtypes``                float32 / float64 / bfloat16 params keep their dtype and stay finite
``bad_hyperparams``       each bad hyper-parameter raises ``ValueError`` naming it
``add_param_group``       ``add_param_group`` validates before it appends: each bad
                          hyper-parameter that is a group key raises ``ValueError``/``TypeError``
                          naming it and leaves ``param_groups`` and ``state`` as they were; a
                          valid group is accepted and its parameters move in the next step
``raising_step``          a step that raises changes nothing: when the closure (the problem's
                          residuals) raises on its 1st, 2nd or 3rd call, or returns NaN, on a
                          fresh optimizer and after 3 steps, every parameter and the whole
                          ``state_dict`` are exactly as before the step; an error caused by a
                          NaN names the cause ("non-finite"/"NaN"/"inf"); with
                          ``nonfinite_raises=True`` a NaN loss or gradient must raise
========================  ===================================================================

Every problem is a least-squares problem ``loss = ½‖r(θ)‖²`` with residuals ``r``, so methods
that need per-example residuals (Gauss–Newton-like optimizers) can take them through a custom
``step_fn(optimizer, problem)``. By default a step is ``optimizer.step(closure)`` where the
closure zeroes the gradients, evaluates the loss and back-propagates.

Example::

    from optforge.testing import ConvergenceSettings, check_optimizer

    check_optimizer(
        lambda params, lr=0.1, **kw: torch.optim.SGD(params, lr=lr, **kw),
        quadratic=ConvergenceSettings(steps=300, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=20000, tol=1e-2, hyperparams={"lr": 2e-3}),
        bad_hyperparams={"lr": -1.0, "momentum": -0.5},
    )
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CHECKS",
    "ConvergenceSettings",
    "InjectedFault",
    "Problem",
    "check_optimizer",
    "default_step",
    "make_linear_regression",
    "make_quadratic",
    "make_rosenbrock",
]

Factory = Callable[..., torch.optim.Optimizer]


@dataclass
class Problem:
    """A least-squares test problem: ``loss = ½‖residuals()‖²`` over ``params``."""

    params: list[Tensor]
    residuals: Callable[[], Tensor]
    solution: list[Tensor] | None = None

    def loss(self) -> Tensor:
        r = self.residuals()
        return 0.5 * (r.float() ** 2).sum()

    def distance_to_solution(self) -> float:
        if self.solution is None:
            raise ValueError("this problem has no known solution")
        sq = sum(
            float(((p.detach().double() - s.double()) ** 2).sum())
            for p, s in zip(self.params, self.solution, strict=True)
        )
        return sq**0.5


@dataclass(frozen=True)
class ConvergenceSettings:
    """Steps, tolerance (distance to the minimiser) and hyper-parameter overrides for a check."""

    steps: int
    tol: float
    hyperparams: Mapping[str, Any] = field(default_factory=dict)


def make_quadratic(dtype: torch.dtype = torch.float64, dim: int = 10) -> Problem:
    """``½ Σ a_i (x_i − c_i)²`` with ``a = 1..10`` (condition number 10), ``x0 = 0``."""
    gen = torch.Generator().manual_seed(0)
    curvature = torch.linspace(1.0, 10.0, dim, dtype=torch.float64)
    center = torch.randn(dim, generator=gen, dtype=torch.float64)
    x = torch.zeros(dim, dtype=dtype, requires_grad=True)
    sqrt_a = curvature.sqrt().to(dtype)
    c = center.to(dtype)
    return Problem([x], lambda: sqrt_a * (x - c), [center])


def make_rosenbrock(dtype: torch.dtype = torch.float64) -> Problem:
    """``½[(1 − x)² + 100 (y − x²)²]`` from ``(−1.5, 2)``; minimiser ``(1, 1)``."""
    xy = torch.tensor([-1.5, 2.0], dtype=dtype, requires_grad=True)
    return Problem(
        [xy],
        lambda: torch.stack([1 - xy[0], 10 * (xy[1] - xy[0] ** 2)]),
        [torch.ones(2, dtype=torch.float64)],
    )


def make_linear_regression(dtype: torch.dtype = torch.float32, seed: int = 0) -> Problem:
    """A 10 → 5 linear model (weight and bias) on 32 random examples of a noisy linear teacher."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(32, 10, generator=gen, dtype=torch.float64)
    teacher = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    targets = inputs @ teacher + 0.1 * torch.randn(32, 5, generator=gen, dtype=torch.float64)
    weight = (0.1 * torch.randn(10, 5, generator=gen, dtype=torch.float64)).to(dtype)
    bias = torch.zeros(5, dtype=dtype)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    x, y = inputs.to(dtype), targets.to(dtype)
    return Problem([weight, bias], lambda: ((x @ weight + bias - y) / 32**0.5).flatten())


def _loss_value(problem: Problem) -> float:
    with torch.no_grad():
        return float(problem.loss())


def default_step(optimizer: torch.optim.Optimizer, problem: Problem) -> Any:
    """``optimizer.step(closure)`` with a closure that zeroes grads and back-propagates."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.loss()
        loss.backward()
        return loss

    return optimizer.step(closure)


@dataclass
class _Settings:
    factory: Factory
    step_fn: Callable[[torch.optim.Optimizer, Problem], Any]
    custom_step: bool
    quadratic: ConvergenceSettings | None
    rosenbrock: ConvergenceSettings | None
    bad_hyperparams: Mapping[str, Any]
    group_hyperparams: Mapping[str, Any]
    deterministic_hyperparams: Mapping[str, Any]
    dtypes: Sequence[torch.dtype]
    has_lr: bool
    strict_messages: bool
    nonfinite_raises: bool


def _run(settings: _Settings, optimizer: torch.optim.Optimizer, problem: Problem, n: int) -> None:
    for _ in range(n):
        settings.step_fn(optimizer, problem)


def _check_downhill(s: _Settings) -> None:
    problem = make_linear_regression()
    optimizer = s.factory(problem.params)
    start = _loss_value(problem)
    before = [p.detach().clone() for p in problem.params]
    returned = s.step_fn(optimizer, problem)
    if not s.custom_step:
        assert isinstance(returned, Tensor) and torch.allclose(
            returned.detach().float(), torch.tensor(start)
        ), f"step(closure) should return the closure's loss {start:.6g}, got {returned!r}"
    _run(s, optimizer, problem, 19)
    end = _loss_value(problem)
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, problem.params, strict=True))
    assert moved, "parameters did not move in 20 steps"
    assert end < start, f"loss went up in 20 steps on linear regression: {start:.6g} -> {end:.6g}"


def _check_convergence(
    s: _Settings, make: Callable[[], Problem], conv: ConvergenceSettings, label: str
) -> None:
    problem = make()
    optimizer = s.factory(problem.params, **conv.hyperparams)
    _run(s, optimizer, problem, conv.steps)
    dist = problem.distance_to_solution()
    assert dist <= conv.tol, (
        f"{label}: distance to the minimiser {dist:.3g} > tol {conv.tol:g} after {conv.steps} steps"
    )


def _check_quadratic(s: _Settings) -> None:
    if s.quadratic is not None:
        _check_convergence(s, make_quadratic, s.quadratic, "quadratic")


def _check_rosenbrock(s: _Settings) -> None:
    if s.rosenbrock is not None:
        _check_convergence(s, make_rosenbrock, s.rosenbrock, "rosenbrock")


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _check_state_dict(s: _Settings) -> None:
    first = make_linear_regression()
    optimizer = s.factory(first.params)
    _run(s, optimizer, first, 5)
    saved = _roundtrip(optimizer.state_dict())
    second = make_linear_regression()
    with torch.no_grad():
        for p, q in zip(second.params, first.params, strict=True):
            p.copy_(q)
    resumed = s.factory(second.params)
    resumed.load_state_dict(saved)
    _run(s, optimizer, first, 5)
    _run(s, resumed, second, 5)
    for i, (p, q) in enumerate(zip(first.params, second.params, strict=True)):
        assert torch.equal(p, q), (
            f"state_dict round trip: param {i} differs after resuming "
            f"(max abs diff {float((p - q).detach().abs().max()):.3g})"
        )


def _check_param_groups(s: _Settings) -> None:
    hp = dict(s.deterministic_hyperparams)
    first, second = make_linear_regression(seed=0), make_linear_regression(seed=1)
    joint = Problem(
        first.params + second.params,
        lambda: torch.cat([first.residuals(), second.residuals()]),
    )
    alone_first, alone_second = make_linear_regression(seed=0), make_linear_regression(seed=1)
    groups = [{"params": first.params}, {"params": second.params, **s.group_hyperparams}]
    together = s.factory(groups, **hp)
    optimizer_first = s.factory(alone_first.params, **hp)
    optimizer_second = s.factory(alone_second.params, **{**hp, **s.group_hyperparams})
    for _ in range(10):
        s.step_fn(together, joint)
        s.step_fn(optimizer_first, alone_first)
        s.step_fn(optimizer_second, alone_second)
    pairs = zip(joint.params, alone_first.params + alone_second.params, strict=True)
    for i, (p, q) in enumerate(pairs):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), (
            f"two param groups do not behave like two optimizers (param {i} differs by "
            f"{float((p - q).detach().abs().max()):.3g})"
        )


def _check_lr_scheduler(s: _Settings) -> None:
    if not s.has_lr:
        return
    problem = make_linear_regression()
    optimizer = s.factory(problem.params)
    base_lr = optimizer.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 0.0 if epoch < 1 else 0.5
    )
    before = [p.detach().clone() for p in problem.params]
    s.step_fn(optimizer, problem)
    for i, (b, p) in enumerate(zip(before, problem.params, strict=True)):
        assert torch.equal(b, p.detach()), f"with the scheduler's lr = 0, param {i} still moved"
    scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    assert abs(float(lr) - 0.5 * float(base_lr)) <= 1e-12 * max(1.0, abs(float(base_lr))), (
        f"scheduler set lr to {lr}, expected {0.5 * base_lr}"
    )
    start = _loss_value(problem)
    _run(s, optimizer, problem, 5)
    assert _loss_value(problem) < start, "no progress after the scheduler restored the lr"


def _check_dtypes(s: _Settings) -> None:
    for dtype in s.dtypes:
        problem = make_linear_regression(dtype=dtype)
        optimizer = s.factory(problem.params)
        start = _loss_value(problem)
        _run(s, optimizer, problem, 10)
        for i, p in enumerate(problem.params):
            assert p.dtype == dtype, f"param {i} changed dtype {dtype} -> {p.dtype}"
            assert torch.isfinite(p).all(), f"param {i} has non-finite values in {dtype}"
        end = _loss_value(problem)
        assert end < start, f"loss did not decrease in {dtype}: {start:.4g} -> {end:.4g}"


def _check_bad_hyperparams(s: _Settings) -> None:
    for name, value in s.bad_hyperparams.items():
        problem = make_linear_regression()
        try:
            s.factory(problem.params, **{name: value})
        except ValueError as err:
            assert not s.strict_messages or name in str(err), (
                f"ValueError for {name}={value!r} does not name the argument: {err}"
            )
        else:
            raise AssertionError(f"{name}={value!r} was accepted; expected a ValueError naming it")


class InjectedFault(Exception):
    """Raised by the faulty problems of the ``raising_step`` check (never by an optimizer)."""


def _same(a: Any, b: Any) -> bool:
    """Deep equality of state-dict-like values: tensors bit for bit (NaN equals NaN)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            return False
        if a.is_floating_point():
            return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
        return bool(torch.equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@dataclass
class _Snapshot:
    params: list[Tensor]
    state: dict[str, Any]
    num_groups: int

    @classmethod
    def take(cls, optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> _Snapshot:
        return cls(
            [p.detach().clone() for p in params],
            _roundtrip(optimizer.state_dict()),
            len(optimizer.param_groups),
        )

    def differences(self, optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> str:
        """What changed since the snapshot, in words ('' when nothing did)."""
        out = [
            f"param {i}"
            for i, (b, p) in enumerate(zip(self.params, params, strict=True))
            if not _same(b, p.detach())
        ]
        if len(optimizer.param_groups) != self.num_groups:
            out.append(f"param_groups ({self.num_groups} -> {len(optimizer.param_groups)})")
        now = optimizer.state_dict()
        for key in sorted(set(now) | set(self.state), key=str):
            if key == "param_groups" and len(optimizer.param_groups) != self.num_groups:
                continue  # reported above
            if not _same(now.get(key), self.state.get(key)):
                out.append(f"state_dict[{key!r}]")
        return ", ".join(out)


def _faulty(problem: Problem, *, raise_on: int | None = None, nan_from: int | None = None):
    """``problem`` whose residuals raise :class:`InjectedFault` on call ``raise_on`` or turn
    NaN from call ``nan_from`` on (with a NaN gradient)."""
    calls = [0]

    def residuals() -> Tensor:
        calls[0] += 1
        if raise_on is not None and calls[0] == raise_on:
            raise InjectedFault(f"injected failure on residual call {calls[0]}")
        r = problem.residuals()
        if nan_from is not None and calls[0] >= nan_from:
            r = r * math.nan
        return r

    return Problem(problem.params, residuals, problem.solution)


_NONFINITE_WORDS = ("non-finite", "nonfinite", "nan", "inf")


def _check_add_param_group(s: _Settings) -> None:
    first, second = make_linear_regression(seed=0), make_linear_regression(seed=1)
    optimizer = s.factory(first.params)
    optimizer.add_param_group({"params": second.params})
    assert len(optimizer.param_groups) == 2, "a valid add_param_group did not add a group"
    joint = Problem(
        first.params + second.params,
        lambda: torch.cat([first.residuals(), second.residuals()]),
    )
    before = [p.detach().clone() for p in second.params]
    s.step_fn(optimizer, joint)
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, second.params, strict=True))
    assert moved, "the parameters of a group added with add_param_group did not move in a step"
    for name, value in s.bad_hyperparams.items():
        problem, extra = make_linear_regression(seed=0), make_linear_regression(seed=1)
        optimizer = s.factory(problem.params)
        if name not in optimizer.param_groups[0]:
            continue  # not a param-group hyper-parameter (e.g. a wrapper's own argument)
        _run(s, optimizer, problem, 2)
        snapshot = _Snapshot.take(optimizer, problem.params)
        try:
            optimizer.add_param_group({"params": extra.params, name: value})
        except (ValueError, TypeError) as err:
            assert not s.strict_messages or name in str(err), (
                f"add_param_group: the error for {name}={value!r} does not name it: {err}"
            )
        else:
            raise AssertionError(
                f"add_param_group accepted {name}={value!r}; expected a ValueError naming it"
            )
        changed = snapshot.differences(optimizer, problem.params)
        assert not changed, (
            f"add_param_group with {name}={value!r} raised but changed {changed} (validate "
            "before appending)"
        )


def _check_raising_step(s: _Settings) -> None:
    for warm in (0, 3):
        for fault in ("raise1", "raise2", "raise3", "nan1", "nan2"):
            problem = make_linear_regression()
            optimizer = s.factory(problem.params)
            _run(s, optimizer, problem, warm)
            k = int(fault[-1])
            if fault.startswith("raise"):
                faulty = _faulty(problem, raise_on=k)
            else:
                faulty = _faulty(problem, nan_from=k)
            snapshot = _Snapshot.take(optimizer, problem.params)
            where = f"after {warm} steps" if warm else "on a fresh optimizer"
            try:
                s.step_fn(optimizer, faulty)
            except InjectedFault:
                pass
            except Exception as err:
                if fault.startswith("raise"):
                    raise AssertionError(
                        f"a closure that raised InjectedFault gave {type(err).__name__}: {err} "
                        "(let the user's exception through)"
                    ) from err
                text = str(err).lower()
                assert any(word in text for word in _NONFINITE_WORDS), (
                    f"the error for a NaN loss/gradient does not name the cause "
                    f"(non-finite/NaN/inf): {type(err).__name__}: {err}"
                )
            else:
                if fault == "nan1" and s.nonfinite_raises:
                    raise AssertionError(
                        f"a NaN loss and gradient {where} did not raise (nonfinite_raises=True)"
                    )
                continue
            changed = snapshot.differences(optimizer, problem.params)
            label = (
                f"a closure raising on call {k}"
                if fault.startswith("raise")
                else f"a NaN loss from closure call {k}"
            )
            assert not changed, f"a step that raised ({label}, {where}) changed {changed}"


CHECKS: dict[str, Callable[[_Settings], None]] = {
    "downhill": _check_downhill,
    "quadratic": _check_quadratic,
    "rosenbrock": _check_rosenbrock,
    "state_dict": _check_state_dict,
    "param_groups": _check_param_groups,
    "lr_scheduler": _check_lr_scheduler,
    "dtypes": _check_dtypes,
    "bad_hyperparams": _check_bad_hyperparams,
    "add_param_group": _check_add_param_group,
    "raising_step": _check_raising_step,
}


def check_optimizer(
    factory: Factory,
    *,
    quadratic: ConvergenceSettings | None = ConvergenceSettings(steps=500, tol=1e-3),
    rosenbrock: ConvergenceSettings | None = None,
    bad_hyperparams: Mapping[str, Any] | None = None,
    group_hyperparams: Mapping[str, Any] | None = None,
    deterministic_hyperparams: Mapping[str, Any] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64, torch.bfloat16),
    has_lr: bool = True,
    step_fn: Callable[[torch.optim.Optimizer, Problem], Any] | None = None,
    checks: Iterable[str] | None = None,
    strict_messages: bool = True,
    nonfinite_raises: bool = False,
) -> None:
    """Run the conformance checks on ``factory`` and raise ``AssertionError`` listing failures.

    Args:
        factory: ``factory(params, **hyperparams) -> Optimizer``; ``params`` is a list of
            tensors or of param-group dicts, as for any ``torch.optim`` optimizer.
        quadratic: steps/tolerance/hyper-parameters for the quadratic check (``None`` skips it).
        rosenbrock: the same for Rosenbrock (``None`` skips it; it is the harder one).
        bad_hyperparams: ``{name: bad value}``; each must raise a ``ValueError`` naming ``name``.
            Default ``{"lr": -1.0}`` when ``has_lr``.
        group_hyperparams: overrides for the second param group (default: half the lr).
        deterministic_hyperparams: overrides that make the optimizer deterministic for the
            param-group check (e.g. ``{"eta": 0.0}`` for a noise wrapper, whose noise stream
            depends on the order of all parameters by design).
        dtypes: parameter dtypes whose preservation is checked.
        has_lr: whether the optimizer has an ``lr`` an LR scheduler can drive.
        step_fn: ``step_fn(optimizer, problem)`` performing one step (default: closure step).
        checks: a subset of :data:`CHECKS` names (default: all).
        strict_messages: require each ``ValueError`` message to contain the argument's name.
            optforge's optimizers do; torch's core optimizers say e.g. "Invalid learning
            rate: -1.0", so their conformance tests pass ``False`` (a ``ValueError`` is still
            required).
        nonfinite_raises: require a NaN loss and gradient to raise (optimizers that check
            finiteness); by default a NaN may also propagate, as in ``torch.optim``. Either way a
            step that raises must leave parameters and state as they were.
    """
    if bad_hyperparams is None:
        bad_hyperparams = {"lr": -1.0} if has_lr else {}
    if group_hyperparams is None:
        group_hyperparams = {}
        if has_lr:
            probe = factory(make_linear_regression().params)
            group_hyperparams = {"lr": 0.5 * float(probe.param_groups[0]["lr"])}
    settings = _Settings(
        factory=factory,
        step_fn=step_fn or default_step,
        custom_step=step_fn is not None,
        quadratic=quadratic,
        rosenbrock=rosenbrock,
        bad_hyperparams=bad_hyperparams,
        group_hyperparams=group_hyperparams,
        deterministic_hyperparams=deterministic_hyperparams or {},
        dtypes=dtypes,
        has_lr=has_lr,
        strict_messages=strict_messages,
        nonfinite_raises=nonfinite_raises,
    )
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"checks: unknown names {unknown}; known: {list(CHECKS)}")
    failures = []
    for name in names:
        try:
            CHECKS[name](settings)
        except AssertionError as err:
            failures.append(f"[{name}] {err}")
        except Exception as err:  # an optimizer that crashes a check fails it
            failures.append(f"[{name}] raised {type(err).__name__}: {err}")
    if failures:
        raise AssertionError("check_optimizer failed:\n  " + "\n  ".join(failures))
