"""Tests of langevin_recover: cycles, traces and bad inputs of the recipe."""

import math

import pytest
import torch

from optforge.optim import Langevin, langevin_recover
from optforge.problems import tensor_pca


def test_langevin_recover_cycles_and_trace():
    problem = tensor_pca(20, 3, 400.0, seed=3)
    out = langevin_recover(
        problem, beta=40.0, lr=0.05, steps=300, cycles=3, seed=77, trace_every=50
    )
    assert out["trace"]["step"] == [50.0, 100.0, 150.0, 200.0, 250.0, 300.0]
    assert 0.0 <= out["overlap_avg"] <= 1.0 and 0.0 <= out["overlap_last"] <= 1.0
    assert float(out["avg"].norm()) == pytest.approx(1.0, abs=1e-6)
    again = langevin_recover(problem, beta=40.0, lr=0.05, steps=300, cycles=3, seed=77)
    assert torch.equal(again["last"], out["last"])


def test_bad_inputs_of_the_recipe_and_step():
    problem = tensor_pca(4, 3, 10.0, seed=0)
    for burn_in in (1.0, -0.1, 10, 20):
        with pytest.raises(ValueError, match="burn_in"):
            langevin_recover(problem, steps=10, burn_in=burn_in)
    with pytest.raises(ValueError, match="steps"):
        langevin_recover(problem, steps=0)
    with pytest.raises(NotImplementedError):
        Langevin([torch.zeros(2, dtype=torch.complex64, requires_grad=True)], lr=0.1, beta=1.0)
    x = torch.ones(2, requires_grad=True)
    opt = Langevin([x], lr=0.1, beta=1.0)
    x.grad = torch.tensor([float("nan"), 0.0])
    with pytest.raises(ValueError, match="NaN"):
        opt.step()


def test_cycles_restart_from_the_normalised_average():
    """β = ∞ (deterministic): 2 cycles of 40 steps = one 40-step run, then a second run started
    from its normalised average."""
    problem = tensor_pca(10, 3, 200.0, seed=5, dtype=torch.float64)
    init = torch.nn.functional.normalize(torch.arange(1.0, 11.0, dtype=torch.float64), dim=0)
    kw = {"beta": math.inf, "lr": 0.05, "burn_in": 10}
    both = langevin_recover(problem, steps=80, cycles=2, init=init, **kw)
    first = langevin_recover(problem, steps=40, init=init, **kw)
    second = langevin_recover(problem, steps=40, init=first["avg"], **kw)
    torch.testing.assert_close(both["avg"], second["avg"])
    torch.testing.assert_close(both["last"], second["last"])
