"""The ``optforge`` command line: ``list``, ``reproduce``, ``report`` and ``bench``.

Exit status of ``reproduce``: 0 when every claim held, 1 when any claim failed, 2 on an error
(unknown reproduction, bad option, missing extra, a run that raised). Errors are one line on
stderr (set ``OPTFORGE_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optforge.repro import (
    SCALES,
    RunStore,
    TrialResult,
    all_reproductions,
    get,
    make_executor,
    run_reproduction,
)
from optforge.repro.runner import check_extras, plan_trials, validate_request

app = typer.Typer(
    name="optforge",
    help="Reproduce the claims of the optimization papers optforge implements.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# typer >= 0.20 vendors click as ``typer._click``; older typer uses click itself.
_click_exceptions = getattr(typer, "_click", click).exceptions


class CliError(Exception):
    """An error reported as one line with exit status 2."""


def _console(to_stderr: bool) -> Console:
    return Console(stderr=to_stderr, highlight=False)


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered reproductions."""
    rows = [
        {
            "name": r.name,
            "title": r.title,
            "arxiv": r.arxiv,
            "spec": r.spec,
            "scales": list(SCALES),
            "seeds": dict(r.seeds),
            "methods": list(r.methods),
            "extras": list(r.extras),
        }
        for r in all_reproductions()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="optforge reproductions")
    for col in ("name", "paper", "arXiv", "scales", "methods"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["name"],
            row["title"],
            row["arxiv"],
            " ".join(row["scales"]),
            ", ".join(row["methods"]),
        )
    _console(False).print(table)


@app.command("reproduce")
def reproduce_command(
    names: Annotated[list[str] | None, typer.Argument(help="Reproduction names.")] = None,
    run_all: Annotated[bool, typer.Option("--all", help="Run every reproduction.")] = False,
    scale: Annotated[str, typer.Option(help="smoke | quick | full")] = "quick",
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (default: per scale).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads per trial.")] = 1,
    executor: Annotated[
        str, typer.Option(help="Trial executor: local | processes | ray.")
    ] = "local",
    workers: Annotated[
        int | None, typer.Option(help="Workers for --executor processes or ray.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Results store directory.")] = Path("optforge-runs"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run record(s) as JSON.")
    ] = False,
) -> None:
    """Run reproductions, store their records and print the claims tables."""
    if run_all and names:
        raise CliError("give reproduction names or --all, not both")
    if not run_all and not names:
        raise CliError("give at least one reproduction name, or --all")
    if threads < 1:
        raise CliError(f"--threads must be >= 1, got {threads}")
    try:
        validate_request(scale, seeds, device)
        chosen = all_reproductions() if run_all else [get(n) for n in names or []]
        for reproduction in chosen:
            check_extras(reproduction)
        runner = make_executor(executor, workers)
    except (ValueError, ImportError) as err:
        raise CliError(str(err)) from err
    except KeyError as err:
        raise CliError(err.args[0]) from err

    console = _console(to_stderr=as_json)
    store = RunStore(out)
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        for reproduction in chosen:
            n_trials = len(plan_trials(reproduction, scale, reproduction.seed_list(scale, seeds)))
            task = progress.add_task(f"{reproduction.name} [{scale}]", total=n_trials)

            def advance(result: TrialResult, task: Any = task) -> None:
                progress.update(
                    task,
                    advance=1,
                    description=f"{result.trial.name} [{scale}] {result.trial.method} "
                    f"seed {result.trial.seed}",
                )

            try:
                record = run_reproduction(
                    reproduction,
                    scale,
                    n_seeds=seeds,
                    device=device,
                    threads=threads,
                    executor=runner,
                    on_trial_done=advance,
                )
            except Exception as err:
                if os.environ.get("OPTFORGE_DEBUG"):
                    traceback.print_exc()
                errors.append(f"{reproduction.name}: {type(err).__name__}: {err}")
                progress.remove_task(task)
                continue
            progress.remove_task(task)
            path = store.append(record)
            records.append(record)
            _print_claims(console, record, path)

    if as_json:
        typer.echo(
            json.dumps(records[0] if len(records) == 1 and not run_all else records, indent=1)
        )
    for line in errors:
        typer.echo(f"optforge: error: {line.splitlines()[0]}", err=True)
    if errors:
        raise typer.Exit(2)
    raise typer.Exit(0 if all(r["all_held"] for r in records) else 1)


def _print_claims(console: Console, record: dict[str, Any], path: Path) -> None:
    info = record["run_info"]
    table = Table(
        title=f"{record['name']} — {record['title']} (arXiv {record['arxiv']})",
        caption=f"scale {record['scale']} · seeds {record['seeds']} · {info['device']} · "
        f"{info['wall_time_s']:.1f} s · record {path}",
    )
    for col in ("claim", "measured", "threshold", "result"):
        table.add_column(col)
    for claim in record["claims"]:
        value = "n/a" if claim["value"] is None else f"{claim['value']:.4g}"
        verdict = "[green]held[/green]" if claim["held"] else "[red]FAILED[/red]"
        table.add_row(claim["name"], value, f"{claim['op']} {claim['threshold']:.4g}", verdict)
    console.print(table)


@app.command("report")
def report_command(
    out: Annotated[
        Path, typer.Option(help="Results store directory (report is written there).")
    ] = Path("optforge-runs"),
) -> None:
    """Render the latest run of every reproduction into report.md, report.html and PNG plots."""
    from optforge.repro.report import render_report

    records = RunStore(out).latest()
    if not records:
        raise CliError(f"no runs in {out}; run `optforge reproduce` first")
    paths = render_report(records, out)
    typer.echo(f"wrote {paths['markdown']} and {paths['html']} ({len(records)} reproductions)")


@app.command("bench")
def bench_command(
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="Results store directory.")] = Path("optforge-runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes (about a minute on one CPU thread).")
    ] = False,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """Run the performance suite (cost ratios vs Adam, nn.Linear, AltMin, CMA-ES) into the store."""
    from optforge.repro.bench import run_bench

    if threads < 1:
        raise CliError(f"--threads must be >= 1, got {threads}")
    try:
        validate_request("quick", None, device)
    except ValueError as err:
        raise CliError(str(err)) from err
    import torch

    torch.set_num_threads(threads)
    console = _console(to_stderr=as_json)
    with console.status("optforge bench: measuring ..."):
        record = run_bench(device, quick=quick)
    path = RunStore(out).append(record)
    if as_json:
        typer.echo(json.dumps(record, indent=1))
    else:
        _print_bench(console, record, path)
    raise typer.Exit(0 if record["all_held"] else 1)


def _print_bench(console: Console, record: dict[str, Any], path: Path) -> None:
    info = record["run_info"]
    table = Table(
        title="optforge bench: ratio = cost / baseline's cost (< 1: cheaper)",
        caption=f"{record['scale']} · {info['device']} ({info['device_name']}) · "
        f"{info['threads']} thread(s) · {info['wall_time_s']:.1f} s · record {path}",
    )
    for col in ("row", "ratio", "details"):
        table.add_column(col)
    for name, per_seed in record["metrics"].items():
        values = per_seed["0"]
        ratio = values.get("ratio")
        details = ", ".join(
            f"{k}={v:.4g}" for k, v in values.items() if k != "ratio" and isinstance(v, float)
        )
        table.add_row(escape(name), "n/a" if ratio is None else f"{ratio:.3g}", details)
    console.print(table)
    for claim in record["claims"]:
        verdict = "held" if claim["held"] else "FAILED"
        console.print(f"{claim['name']}: {verdict}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning usage errors into one line and exit status 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="optforge", standalone_mode=False)
    except CliError as err:
        typer.echo(f"optforge: error: {err}", err=True)
        sys.exit(2)
    except (_click_exceptions.UsageError, click.exceptions.UsageError) as err:
        if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:
            typer.echo(err.ctx.get_help())
            sys.exit(0)
        typer.echo(f"optforge: error: {err.format_message().splitlines()[0]}", err=True)
        sys.exit(2)
    except (_click_exceptions.Abort, click.exceptions.Abort):
        typer.echo("optforge: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
