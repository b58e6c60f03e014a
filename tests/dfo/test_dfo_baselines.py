"""Library baselines (NOMAD, CMA-ES, NGOpt): budgets respected, values recorded in order."""

import numpy as np
import pytest

from optforge.dfo.baselines import run_cma, run_nevergrad, run_nomad


def _sphere(x):
    return float(np.sum((np.asarray(x) - 0.3) ** 2))


@pytest.mark.parametrize(
    ("runner", "module"),
    [(run_nomad, "PyNomad"), (run_cma, "cma"), (run_nevergrad, "nevergrad")],
)
def test_baseline_respects_budget_and_records_every_value(runner, module):
    pytest.importorskip(module)
    calls = []

    def fn(x):
        calls.append(np.array(x))
        return _sphere(x)

    run = runner(fn, np.zeros(3), 60, 0, bounds=(-1.0, 1.0))
    assert 0 < run.n_evals <= 60 and run.n_evals == min(len(calls), 60)
    assert run.values == [_sphere(c) for c in calls][: run.n_evals]
    assert run.f_best == min(run.values) < _sphere(np.zeros(3))
    assert np.all(np.abs(run.x_best) <= 1.0)


def test_nomad_large_dimension_settings_keep_it_fast_and_seeded():
    pytest.importorskip("PyNomad")
    a = run_nomad(_sphere, np.zeros(60), 150, seed=3)
    b = run_nomad(_sphere, np.zeros(60), 150, seed=3)
    assert a.values == b.values and a.n_evals == 150 and a.f_best < _sphere(np.zeros(60))
