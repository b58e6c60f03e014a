"""``optforge bench``: the performance suite, as ratios against the baselines a user would pick,
all measured in one process run (so the machine's speed cancels out).

Each section is declared next to what it measures and registered like a reproduction
(:mod:`~optforge.repro.bench.registry`); its rows are "methods" of the record (``ratio`` < 1
means cheaper than the baseline):

* :mod:`~optforge.repro.bench.step_time`, rows ``step[small|large]/<optimizer>``: one training
  step of an MLP / the same step with ``torch.optim.Adam(foreach=True)``; each optimizer's step
  is a case registered in :mod:`optforge.repro.bench.steps` (one module per call form).
  GradNormSmoothNewton is not timed per step: it solves a dense ``d × d`` Newton system per
  step and is compared per function evaluation in ``benchmarks/regularized_newton.py``.
* :mod:`~optforge.repro.bench.wta_memory`, rows ``wta/<variant>``: saved activation bytes and
  step time of WTA-CRS layers / ``nn.Linear`` and ``torch.utils.checkpoint``.
* :mod:`~optforge.repro.bench.altmin_time`, rows ``altmin/<solver>``: wall time to a target
  error of robust AltMin / exact AltMin and SoftImpute.
* :mod:`~optforge.repro.bench.dfo_evals`, rows ``dfo/<problem>/<method>``: evaluations to a
  target, CDSM vs NOMAD, CMA-ES and NGOpt.

:mod:`~optforge.repro.bench.suite` runs them and builds the record with the runner's record
builder; timing comes from :mod:`optforge.repro.timing`.

Example::

    from optforge.repro.bench import run_bench

    record = run_bench("cpu", quick=True)  # what `optforge bench --quick` stores
"""

from optforge.repro.bench.altmin_time import (
    altmin,
    altmin_time_to_target,
    soft_impute_time_to_target,
)
from optforge.repro.bench.dfo_evals import dfo
from optforge.repro.bench.registry import (
    BenchEntry,
    all_bench_entries,
    get_bench,
    register_bench,
)
from optforge.repro.bench.step_time import (
    StepCase,
    StepProblem,
    first_order_step,
    optimizer_steps,
    register_step,
    step_cases,
)
from optforge.repro.bench.suite import run_bench
from optforge.repro.bench.wta_memory import wta_crs
from optforge.repro.timing import time_interleaved

__all__ = [
    "BenchEntry",
    "StepCase",
    "StepProblem",
    "all_bench_entries",
    "altmin",
    "altmin_time_to_target",
    "dfo",
    "first_order_step",
    "get_bench",
    "optimizer_steps",
    "register_bench",
    "register_step",
    "run_bench",
    "soft_impute_time_to_target",
    "step_cases",
    "time_interleaved",
    "wta_crs",
]
