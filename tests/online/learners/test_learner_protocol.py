"""The predict/update protocol shared by every learner: state_dict, input checks (base)."""

import io
import warnings

import pytest
import torch
from _online_helpers import F64, _grads, _play, _zeros

from optforge.online import (
    FTRL,
    OGD,
    ONS,
    Ball,
    OptimisticEnsemble,
    OptimisticFTRL,
    OptimisticOGD,
    OptimisticOMD,
    OptimisticONS,
    Unconstrained,
)


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OptimisticOGD(_zeros(3), Ball(1.0), smoothness=1.0),
        lambda: OGD(_zeros(3), Ball(1.0)),
        lambda: FTRL(_zeros(3), Ball(1.0)),
        lambda: OptimisticFTRL(_zeros(3), Ball(1.0), smoothness=1.0),
        lambda: OptimisticONS(
            _zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=4.0, outer="diff"
        ),
        lambda: ONS(_zeros(3), Ball(0.5), exp_concavity=1.0, grad_bound=4.0),
        lambda: OptimisticEnsemble(
            _zeros(3), Ball(1.0), horizon=100, grad_bound=4.0, smoothness=1.0
        ),
    ],
)
def test_state_dict_round_trip_continues_identically(make):
    grads = _grads(n=30, d=3)
    first = make()
    _play(first, grads[:15])
    saved = _roundtrip(first.state_dict())
    second = make()
    second.load_state_dict(saved)
    assert torch.equal(_play(first, grads[15:]), _play(second, grads[15:]))


def test_bad_inputs_name_the_argument():
    x0 = _zeros(3)
    with pytest.raises(ValueError, match="lr"):
        OptimisticOGD(x0, Ball(1.0), step="fixed", lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        OGD(x0, Ball(1.0), step="fixed", lr=-1.0)
    with pytest.raises(ValueError, match="strong_convexity"):
        OptimisticOGD(x0, Ball(1.0), step="strongly_convex", strong_convexity=0.0, smoothness=1.0)
    with pytest.raises(ValueError, match="exp_concavity"):
        OptimisticONS(x0, Ball(1.0), exp_concavity=0.0, grad_bound=1.0)
    with pytest.raises(ValueError, match="delta"):
        OptimisticOGD(x0, Ball(1.0), delta=-1.0, smoothness=1.0)
    with pytest.raises(ValueError, match="step"):
        OptimisticOGD(x0, Ball(1.0), step="newton", smoothness=1.0)
    with pytest.raises(ValueError, match="x0"):
        OptimisticOGD(torch.ones(3, dtype=F64), Ball(1.0), smoothness=1.0)
    with pytest.raises(ValueError, match="bounded"):
        OptimisticOGD(x0, Unconstrained(), smoothness=1.0)
    learner = OptimisticOGD(x0, Ball(1.0), smoothness=1.0)
    with pytest.raises(ValueError, match="grad"):
        learner.update(torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="grad"):
        learner.update(torch.tensor([0.0, float("nan"), 0.0], dtype=F64))
    with pytest.raises(ValueError, match="hint"):
        learner.update(x0, hint=torch.tensor([float("inf"), 0.0, 0.0], dtype=F64))
    with pytest.raises(TypeError, match="grad"):
        learner.update([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="Simplex"):
        OptimisticOMD(x0, Ball(1.0), mirror="entropic")
    assert learner.t == 0  # rejected updates leave the state untouched


def test_fixed_step_needs_no_warning_and_works_unconstrained():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner = OptimisticOGD(_zeros(2), Unconstrained(), step="fixed", lr=0.1)
    learner.update(torch.ones(2, dtype=F64))
    torch.testing.assert_close(learner.predict(), torch.full((2,), -0.2, dtype=F64))
