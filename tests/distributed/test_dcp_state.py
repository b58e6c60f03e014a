"""``optforge.distributed.OptimizerState`` in one process: what the 2-rank round trips of
``test_ddp.py`` do not reach (a fresh optimizer left as it was by a save, state that has no place
in the loading optimizer, bad arguments)."""

import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from optforge.distributed import OptimizerState
from optforge.optim import Langevin, NoisyOptimizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()


def _step(model, opt, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


@pytest.mark.parametrize(
    "factory",
    [
        lambda m: Langevin(m.parameters(), lr=0.1, beta=10.0, seed=3),
        lambda m: NoisyOptimizer(
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), eta=0.1, seed=3
        ),
    ],
)
def test_saving_a_fresh_optimizer_changes_nothing_of_its_run(factory, tmp_path):
    # The state template is built by a zero-gradient, lr = 0 step (as torch's helpers do), but
    # the gradients, learning rates, parameters and noise streams are put back.
    a, b = _model(), _model()
    opt_a, opt_b = factory(a), factory(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"optim": OptimizerState(a, opt_a)}, checkpoint_id=str(tmp_path))
    assert all(p.grad is None for p in a.parameters())
    assert [g["lr"] for g in opt_a.param_groups] == [g["lr"] for g in opt_b.param_groups]
    _step(a, opt_a)
    _step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_state_the_loading_optimizer_has_no_place_for_raises_naming_it(tmp_path):
    model = _model()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, sgd)
    dcp.save({"optim": OptimizerState(model, sgd)}, checkpoint_id=str(tmp_path))
    # Gradients already there: the template is not initialised (torch's helpers skip it too),
    # so it has no momentum buffers. DCP alone would load nothing into them, silently.
    model2 = _model(1)
    sgd2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    model2(torch.ones(2, 3, dtype=torch.float64)).sum().backward()
    with pytest.raises(KeyError, match="momentum_buffer"):
        dcp.load({"optim": OptimizerState(model2, sgd2)}, checkpoint_id=str(tmp_path))
    assert not sgd2.state


def test_bad_arguments_raise():
    model = _model()
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        OptimizerState(model, object())
    with pytest.raises(TypeError, match=r"nn\.Module"):
        OptimizerState(object(), torch.optim.SGD(model.parameters(), lr=0.1))
