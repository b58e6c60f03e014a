"""Validation and seeding helpers."""

import math

import pytest
import torch

from optforge._core import (
    check_finite,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    make_generator,
    require,
)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, "1", True])
def test_check_positive_rejects_and_names(bad):
    with pytest.raises(ValueError, match="lr"):
        check_positive("lr", bad)


def test_checks_accept_good_values():
    assert check_positive("a", 0.5) == 0.5
    assert check_nonnegative("a", 0.0) == 0.0
    assert check_positive_int("n", 3) == 3
    assert check_in_range("beta", 0.5, 0.0, 1.0, high_inclusive=False) == 0.5


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (check_nonnegative, ("eta", -0.1)),
        (check_positive_int, ("steps", 0)),
        (check_positive_int, ("steps", 1.5)),
        (check_in_range, ("beta", 1.0, 0.0, 1.0)),
    ],
)
def test_checks_reject(fn, args):
    kwargs = {"high_inclusive": False} if fn is check_in_range else {}
    with pytest.raises(ValueError, match=args[0]):
        fn(*args, **kwargs)


def test_check_finite_counts_bad_values():
    with pytest.raises(ValueError, match="x contains 2 non-finite"):
        check_finite("x", torch.tensor([1.0, math.nan, math.inf]))


def test_make_generator_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = torch.randn(3, generator=make_generator(5))
    b = torch.randn(3, generator=make_generator(5))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r"optforge\[llm\]"):
        require("no_such_module_xyz", "llm")
    assert require("math", "none") is math


def test_dtensor_refusal_is_one_exception_both_ways():
    from optforge._core import DTensorNotSupportedError, refuse_dtensor, refuse_dtensor_group

    assert issubclass(DTensorNotSupportedError, TypeError)
    assert issubclass(DTensorNotSupportedError, NotImplementedError)
    p = torch.nn.Parameter(torch.zeros(2))
    refuse_dtensor([p], "unused")  # plain tensors pass
    group = refuse_dtensor_group({"params": iter([p]), "lr": 0.1}, "unused")
    assert group["params"] == [p] and group["lr"] == 0.1  # an iterator is materialised once
