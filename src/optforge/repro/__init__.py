"""The reproduction harness: registry, runner, results store and report.

Paper modules live in ``optforge.repro.papers`` and register themselves; see
:mod:`optforge.repro.registry` for the contract.
"""

from optforge.repro.executors import Executor, LocalExecutor, ProcessesExecutor, make_executor
from optforge.repro.registry import (
    SCALES,
    Claim,
    Reproduction,
    Results,
    all_reproductions,
    get,
    register,
)
from optforge.repro.runner import Trial, TrialResult, run_reproduction, run_trial
from optforge.repro.store import RunStore

__all__ = [
    "SCALES",
    "Claim",
    "Executor",
    "LocalExecutor",
    "ProcessesExecutor",
    "Reproduction",
    "Results",
    "RunStore",
    "Trial",
    "TrialResult",
    "all_reproductions",
    "get",
    "make_executor",
    "register",
    "run_reproduction",
    "run_trial",
]
