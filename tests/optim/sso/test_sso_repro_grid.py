"""The ``sso`` reproduction runs its η grid as one batch of runs (issue #34): every run must
follow the library's ``SSO`` (Armijo inner loop) step for step."""

import functools

import pytest
import torch

from optforge.optim import SSO
from optforge.repro.papers import sso as repro


@pytest.mark.parametrize("inner_steps", [1, 5, 40])
def test_batched_grid_equals_sso_runs(inner_steps):
    config = {
        **repro.CONFIGS["smoke"],
        "n": 300,
        "d": 12,
        "batch_size": 20,
        "steps": 40,
        "lbfgs_iters": 100,
    }
    x, y = repro._logreg_data(config, 7, "cpu")
    problem = (x, y, repro._f_star(x, y, config["lbfgs_iters"]))
    etas = [10.0**k / 2 for k in range(-3, 4)]  # the quick grid: tiny to huge target steps
    batched = repro._logreg_sso_grid(config, problem, 7, "cpu", etas, inner_steps)
    for eta, (gap, curve) in zip(etas, batched, strict=True):
        make = functools.partial(
            SSO,
            lr=config["inner_lr"],
            target_lr=eta,
            inner_steps=inner_steps,
            armijo_c=config["armijo_c"],
            armijo_beta=config["armijo_beta"],
        )
        ref_gap, ref_curve = repro._logreg_run(config, problem, 7, "cpu", make, True)
        assert len(curve) == len(ref_curve) == 21
        # equal up to float reduction order: ≤ 1e-15 relative on the converging runs; the
        # runs at the largest η (gap ≈ 20) amplify it to ~1e-7 over 40 steps
        torch.testing.assert_close(
            torch.tensor(curve), torch.tensor(ref_curve), rtol=1e-5, atol=1e-12
        )
        assert gap == pytest.approx(ref_gap, rel=1e-5, abs=1e-12)
