"""The reproduction report: the latest run of each (reproduction, scale) in a store, rendered
into ``report.md``, a self-contained ``report.html`` and one PNG per run plus a claim overview.

Example::

    from optforge.repro import RunStore
    from optforge.repro.report import load_latest, render_report

    render_report(load_latest(RunStore("optforge-runs"), scales=["quick"]), "optforge-runs")
"""

from optforge.repro.report.plots import plot_claims_overview, plot_record
from optforge.repro.report.render import (
    ReportError,
    check_record,
    load_latest,
    render_report,
    select_latest,
)
from optforge.repro.report.tables import claims_rows, method_table

__all__ = [
    "ReportError",
    "check_record",
    "claims_rows",
    "load_latest",
    "method_table",
    "plot_claims_overview",
    "plot_record",
    "render_report",
    "select_latest",
]
