"""The conformance suite passes real optimizers and catches planted bugs, each in its check."""

import pytest
import torch

from optforge.testing import CHECKS, ConvergenceSettings, check_optimizer

# torch.optim validates hyper-parameters in __init__ only: its add_param_group accepts a group
# with lr=-1 (a true finding of the add_param_group check, so it is left out for torch).
TORCH_CHECKS = [name for name in CHECKS if name != "add_param_group"]


def sgd(params, lr=0.1, **kw):
    return torch.optim.SGD(params, lr=lr, **kw)


def adam(params, lr=0.05, **kw):
    return torch.optim.Adam(params, lr=lr, **kw)


def test_torch_sgd_passes():
    check_optimizer(
        sgd,
        quadratic=ConvergenceSettings(steps=300, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=20000, tol=1e-2, hyperparams={"lr": 2e-3}),
        bad_hyperparams={"lr": -1.0, "momentum": -0.5},
        strict_messages=False,  # torch says "Invalid learning rate: -1.0"
        checks=TORCH_CHECKS,
    )


def test_torch_adam_passes():
    check_optimizer(
        adam,
        quadratic=ConvergenceSettings(steps=1000, tol=1e-3),
        rosenbrock=ConvergenceSettings(steps=5000, tol=1e-2, hyperparams={"lr": 1e-2}),
        bad_hyperparams={"lr": -1.0, "betas": (1.5, 0.9), "eps": -1.0},
        strict_messages=False,
        checks=TORCH_CHECKS,
    )


# ---------------------------------------------------------------- planted broken optimizers
class UphillSGD(torch.optim.SGD):
    """Steps along +gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=group["lr"])
        return loss


class ForgetfulSGD(torch.optim.SGD):
    """Momentum SGD whose load_state_dict silently drops the momentum buffers."""

    def load_state_dict(self, state_dict):
        state_dict = {**state_dict, "state": {}}
        super().load_state_dict(state_dict)


class LaxSGD(torch.optim.Optimizer):
    """Accepts any hyper-parameter."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-abs(group["lr"]))
        return loss


class DefaultsLrSGD(LaxSGD):
    """Reads the lr from the constructor defaults, ignoring param groups and schedulers."""

    def __init__(self, params, lr=0.1):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, lr)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.defaults["lr"])
        return loss


class Float32SGD(LaxSGD):
    """Silently upcasts every parameter to float32."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.data = p.data.float()
        return loss


class WrongReturnSGD(LaxSGD):
    """Drops the closure's loss."""

    def step(self, closure=None):
        super().step(closure)
        return None


@pytest.mark.parametrize(
    ("factory", "failing_check", "kwargs"),
    [
        (lambda p, lr=0.1, **kw: UphillSGD(p, lr=lr, **kw), "downhill", {}),
        (lambda p, lr=0.1, **kw: UphillSGD(p, lr=lr, **kw), "quadratic", {}),
        (
            lambda p, lr=0.1, **kw: ForgetfulSGD(p, lr=lr, momentum=0.9, **kw),
            "state_dict",
            {},
        ),
        (lambda p, lr=0.1, **kw: LaxSGD(p, lr=lr, **kw), "bad_hyperparams", {}),
        (lambda p, lr=0.1, **kw: DefaultsLrSGD(p, lr=lr, **kw), "lr_scheduler", {}),
        (lambda p, lr=0.1, **kw: DefaultsLrSGD(p, lr=lr, **kw), "param_groups", {}),
        (lambda p, lr=0.1, **kw: Float32SGD(p, lr=lr, **kw), "dtypes", {}),
        (lambda p, lr=0.1, **kw: WrongReturnSGD(p, lr=lr, **kw), "downhill", {}),
        (
            lambda p, lr=0.1, **kw: torch.optim.SGD(p, lr=lr, **kw),
            "rosenbrock",
            {"rosenbrock": ConvergenceSettings(steps=10, tol=1e-2, hyperparams={"lr": 2e-3})},
        ),
    ],
)
def test_planted_bug_is_caught_by_its_check(factory, failing_check, kwargs):
    with pytest.raises(AssertionError, match=rf"\[{failing_check}\]"):
        check_optimizer(factory, checks=[failing_check], **kwargs)


class ValidatingSGD(LaxSGD):
    """Validates lr in __init__ and in add_param_group, before appending."""

    def __init__(self, params, lr=0.1):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, lr)

    def add_param_group(self, param_group):
        if "lr" in param_group and not param_group["lr"] > 0:
            raise ValueError(f"lr must be > 0, got {param_group['lr']}")
        super().add_param_group(param_group)


class AppendThenValidateSGD(ValidatingSGD):
    """Appends the group, then validates it: the invalid group stays after the error."""

    def add_param_group(self, param_group):
        torch.optim.Optimizer.add_param_group(self, param_group)
        if not self.param_groups[-1]["lr"] > 0:
            raise ValueError(f"lr must be > 0, got {self.param_groups[-1]['lr']}")


class FrozenGroupsSGD(ValidatingSGD):
    """Remembers its parameters at construction: a group added later never moves."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr)
        self._frozen = [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p in self._frozen:
            p.add_(p.grad, alpha=-self.param_groups[0]["lr"])
        return loss


class CountThenCheckSGD(ValidatingSGD):
    """Advances state['step'] before it checks the gradients (then raises on NaN)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = self.state[p].get("step", 0) + 1
                if not torch.isfinite(p.grad).all():
                    raise ValueError("non-finite gradient")
                p.add_(p.grad, alpha=-group["lr"])
        return loss


class VagueNaNSGD(ValidatingSGD):
    """Raises on a NaN gradient, with a message that does not say why."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"]]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise ValueError("step failed")
        super().step()
        return loss


class SwallowingSGD(ValidatingSGD):
    """Turns any exception of the closure into its own error."""

    def step(self, closure=None):
        try:
            return super().step(closure)
        except Exception as err:
            raise RuntimeError("the closure failed") from err


def _factory(cls):
    return lambda p, lr=0.1, **kw: cls(p, lr=lr, **kw)


@pytest.mark.parametrize(
    ("cls", "failing_check", "kwargs"),
    [
        (LaxSGD, "add_param_group", {}),
        (AppendThenValidateSGD, "add_param_group", {}),
        (FrozenGroupsSGD, "add_param_group", {}),
        (CountThenCheckSGD, "raising_step", {}),
        (VagueNaNSGD, "raising_step", {}),
        (SwallowingSGD, "raising_step", {}),
        (ValidatingSGD, "raising_step", {"nonfinite_raises": True}),
    ],
)
def test_planted_bug_of_the_reliability_checks_is_caught(cls, failing_check, kwargs):
    with pytest.raises(AssertionError, match=rf"\[{failing_check}\]"):
        check_optimizer(_factory(cls), checks=[failing_check], **kwargs)


def test_reliability_checks_pass_a_correct_optimizer():
    check_optimizer(_factory(ValidatingSGD), checks=["add_param_group", "raising_step"])


def test_strict_messages_reject_torch_style_messages():
    with pytest.raises(AssertionError, match="does not name"):
        check_optimizer(sgd, checks=["bad_hyperparams"], bad_hyperparams={"lr": -1.0})


def test_unknown_check_name_raises():
    with pytest.raises(ValueError, match="checks"):
        check_optimizer(sgd, checks=["nope"])


def test_all_checks_are_listed():
    assert set(CHECKS) == {
        "downhill",
        "quadratic",
        "rosenbrock",
        "state_dict",
        "param_groups",
        "lr_scheduler",
        "dtypes",
        "bad_hyperparams",
        "add_param_group",
        "raising_step",
    }
