"""AdAdaGrad / AdAdaGrad-Norm against a checkpoint written by the earlier mixin-based classes.

``tests/optim/fixtures/adadagrad_v0_checkpoint.pt`` was written by
``tests/optim/fixtures/make_adadagrad_checkpoint.py`` before ``AdaptiveBatch`` replaced the
mixin: three runs (norm test for both classes, augmented inner-product test with
``test_interval=2`` and weight decay), the model and optimizer state after 3 steps, the
parameters after one more step and after 8 steps, and the batch-size trace. The current classes
must continue those runs bit for bit with the per-example statistics they were written with
(``method="per_example"``), and to float tolerance with the default ghost-norm statistics
(``method="auto"``: same batch sizes, parameters within rounding).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import optforge.optim

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _maker() -> ModuleType:
    """The fixture's generating script: its model, data and batch schedule."""
    spec = importlib.util.spec_from_file_location(
        "make_adadagrad_checkpoint", FIXTURES / "make_adadagrad_checkpoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _maker()
FIXTURE = torch.load(FIXTURES / "adadagrad_v0_checkpoint.pt", weights_only=True)
CASES = sorted(FIXTURE["cases"])


def _optimizer(case: dict[str, Any], model: torch.nn.Module, method: str = "per_example") -> Any:
    cls = getattr(optforge.optim, case["class"])
    return cls(model.parameters(), **case["kwargs"], method=method)


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_fixture_is_the_small_committed_file() -> None:
    assert (FIXTURES / "adadagrad_v0_checkpoint.pt").stat().st_size < 32_000
    assert CASES == ["adadagrad", "adadagrad_ip", "adadagrad_norm"]
    assert FIXTURE["meta"]["checkpoint_step"] == 3


@pytest.mark.parametrize("name", CASES)
def test_fresh_run_is_bit_identical_to_the_old_classes(name: str) -> None:
    case = FIXTURE["cases"][name]
    x, y = MAKE.tiny_data()
    model = MAKE.tiny_model()
    opt = _optimizer(case, model)
    sizes = [opt.batch_size]
    for k in range(FIXTURE["meta"]["total_steps"]):
        MAKE.train_step(model, opt, x, y, k)
        sizes.append(opt.batch_size)
        if k + 1 == FIXTURE["meta"]["checkpoint_step"]:
            # the state_dict the new classes write equals the old classes' one
            _assert_same(opt.state_dict(), case["optimizer"], "optimizer")
    assert sizes == case["batch_sizes"]
    assert len(set(sizes)) > 1  # the controller really acted
    assert torch.equal(MAKE.flat_params(model), case["params_after_total_steps"])


@pytest.mark.parametrize("name", CASES)
def test_old_checkpoint_loads_and_continues_bit_identically(name: str) -> None:
    case = FIXTURE["cases"][name]
    meta = FIXTURE["meta"]
    x, y = MAKE.tiny_data()
    model = MAKE.tiny_model()
    model.load_state_dict(case["model"])
    opt = _optimizer({**case, "kwargs": {**case["kwargs"], "max_batch_size": None}}, model)
    opt.load_state_dict(case["optimizer"])
    # the controller comes back from the checkpoint (batch size, step, cap)
    assert opt.controller.state_dict() == case["optimizer"]["adaptive_batch"]
    assert opt.batch_size == case["batch_sizes"][meta["checkpoint_step"]]
    MAKE.train_step(model, opt, x, y, meta["checkpoint_step"])
    assert torch.equal(MAKE.flat_params(model), case["next_params_after_one_more_step"])
    for k in range(meta["checkpoint_step"] + 1, meta["total_steps"]):
        MAKE.train_step(model, opt, x, y, k)
    assert torch.equal(MAKE.flat_params(model), case["params_after_total_steps"])
    assert opt.batch_size == case["batch_sizes"][-1]


@pytest.mark.parametrize("name", CASES)
def test_old_checkpoint_continues_with_ghost_statistics(name: str) -> None:
    # a fresh copy: loading a state dict shares its tensors, and the tests above step them
    fresh = torch.load(FIXTURES / "adadagrad_v0_checkpoint.pt", weights_only=True)
    case = fresh["cases"][name]
    meta = FIXTURE["meta"]
    x, y = MAKE.tiny_data()
    model = MAKE.tiny_model()
    model.load_state_dict(case["model"])
    kwargs = {**case["kwargs"], "max_batch_size": None}
    opt = _optimizer({**case, "kwargs": kwargs}, model, method="auto")
    opt.load_state_dict(case["optimizer"])
    sizes = [opt.batch_size]
    for k in range(meta["checkpoint_step"], meta["total_steps"]):
        MAKE.train_step(model, opt, x, y, k)
        sizes.append(opt.batch_size)
    assert sizes == case["batch_sizes"][meta["checkpoint_step"] :]
    expected = case["params_after_total_steps"]
    torch.testing.assert_close(MAKE.flat_params(model), expected, rtol=1e-9, atol=1e-11)
    assert opt.last_stats_method == "ghost"
