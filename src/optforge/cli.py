"""The ``optforge`` command line: ``list``, ``reproduce``, ``report`` and ``bench``.

Exit status of ``reproduce``: 0 when every claim held, 1 when any claim failed or is
inconclusive (its interval over seeds straddles the threshold: more seeds would decide it, see
``--until-decided``), 2 on an error
(unknown reproduction, bad option, unusable ``--out``, missing extra, a run that raised, a
corrupt store), 130 when interrupted (Ctrl-C). Errors are one line on stderr naming the problem;
``--debug`` (anywhere on the command line) or ``OPTFORGE_DEBUG=1`` adds the traceback.

The torch-heavy harness is imported inside the commands, after the cheap checks of the options,
so a bad ``--out`` is reported at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from optforge.repro.job import Job, Outcome
    from optforge.repro.runner import TrialResult

app = typer.Typer(
    name="optforge",
    help="Reproduce the claims of the optimization papers optforge implements.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# typer >= 0.20 vendors click as ``typer._click`` (its exceptions module has no ``Abort``:
# typer's own ``typer.Abort`` is raised instead); older typer uses click itself.
_click_exceptions = getattr(typer, "_click", click).exceptions
_DEBUG = {"on": False}


class CliError(Exception):
    """An error reported as one line with exit status 2."""


class Aborted(Exception):
    """Ctrl-C: the message is printed on stderr with exit status 130."""


def _debug() -> bool:
    return _DEBUG["on"] or os.environ.get("OPTFORGE_DEBUG", "") not in ("", "0", "false", "no")


def _console(to_stderr: bool) -> Console:
    return Console(stderr=to_stderr, highlight=False)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an error (also OPTFORGE_DEBUG=1)."),
    ] = False,
) -> None:
    """Reproduce the claims of the optimization papers optforge implements."""
    if debug:
        _DEBUG["on"] = True


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered reproductions."""
    from optforge.repro import SCALES, all_reproductions

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
        str | None,
        typer.Option(
            help="Trial executor: local | processes | ray (default: processes when there are "
            "several workers, else local)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Trials run at once (default: the usable cores / --threads; 1 runs every "
            "trial in this process, one after another)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Results store directory.")] = Path("optforge-runs"),
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Rerun even when the store holds an up-to-date record, and ignore the kept "
            "trials of an interrupted run.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run record(s) as JSON.")
    ] = False,
    until_decided: Annotated[
        int | None,
        typer.Option(
            "--until-decided",
            metavar="N_MAX",
            help="Add held-out seeds (the scale's count, doubled each time, at most N_MAX) until "
            "no claim is inconclusive; every look is recorded.",
        ),
    ] = None,
) -> None:
    """Run reproductions as one pool of trials, store their records and print the claims tables.

    A reproduction whose latest record in --out has the same code, package versions, device,
    threads, scale, seeds and config is not rerun (one line says so; --fresh reruns it), and the
    finished trials of an interrupted run are reused, so rerunning a killed command resumes it.
    """
    if run_all and names:
        raise CliError("give reproduction names or --all, not both")
    if not run_all and not names:
        raise CliError("give at least one reproduction name, or --all")
    if threads < 1:
        raise CliError(f"--threads must be >= 1, got {threads}")
    if workers is not None and workers < 1:
        raise CliError(f"--workers must be >= 1, got {workers}")
    _check_out(out)

    from optforge.repro import all_reproductions, get, make_executor
    from optforge.repro.job import Job, JobHooks, Request
    from optforge.repro.store import RunStore, StoreError

    try:
        chosen = all_reproductions() if run_all else [get(n) for n in dict.fromkeys(names or [])]
        requests = [Request(r, scale, seeds, device, threads) for r in chosen]
        runner = None if executor is None else make_executor(executor, workers, threads)
        store = RunStore(out)
        store.check()
    except (ValueError, ImportError) as err:
        raise CliError(str(err)) from err
    except KeyError as err:
        raise CliError(err.args[0]) from err
    except StoreError as err:
        raise CliError(f"--out: {err}") from err

    console = _console(to_stderr=as_json)
    if until_decided is not None:
        _reproduce_until_decided(chosen, requests, until_decided, runner, store, console, as_json)
    view = _JobView(console)
    hooks = JobHooks(
        skipped=view.skipped,
        trial_started=view.trial_started,
        trial_done=view.trial_done,
        finished=view.finished,
    )
    try:
        job = Job(requests, executor=runner, workers=workers, store=store, fresh=fresh, hooks=hooks)
    except (ValueError, ImportError) as err:
        raise CliError(str(err)) from err
    view.job = job
    try:
        with view:
            outcomes = job.run()
    except KeyboardInterrupt:
        written = [o for o in job.outcomes if o.record is not None and not o.skipped]
        if not written:
            raise Aborted("aborted, no record written") from None
        raise Aborted(
            f"aborted; {len(written)} record(s) written before the interrupt, none for the "
            "unfinished reproductions (their finished trials are kept: the same command resumes)"
        ) from None
    except StoreError as err:
        raise CliError(str(err)) from err
    finally:
        if runner is not None:
            runner.close()

    records = [o.record for o in outcomes if o.record is not None]
    errors = [o for o in outcomes if o.error is not None]
    if as_json:
        typer.echo(
            json.dumps(records[0] if len(records) == 1 and not run_all else records, indent=1)
        )
    for outcome in errors:
        if _debug():
            typer.echo(outcome.error, err=True)
        typer.echo(f"optforge: error: {outcome.error.splitlines()[0]}", err=True)
    if errors:
        raise typer.Exit(2)
    raise typer.Exit(0 if all(r["all_held"] for r in records) else 1)


def _reproduce_until_decided(
    chosen: list[Any],
    requests: list[Any],
    n_max: int,
    runner: Any,
    store: Any,
    console: Console,
    as_json: bool,
) -> None:
    """``reproduce --until-decided``: one sequential run per reproduction (exits)."""
    from optforge.repro.sequential import planned_looks, run_until_decided

    try:
        for reproduction, request in zip(chosen, requests, strict=True):
            planned_looks(request.n_seeds or reproduction.seeds[request.scale], n_max)
    except ValueError as err:
        raise CliError(str(err)) from err
    records = []
    for reproduction, request in zip(chosen, requests, strict=True):
        record = run_until_decided(
            reproduction,
            request.scale,
            n_max,
            n_start=request.n_seeds,
            device=request.device,
            threads=request.threads,
            executor=runner,
            on_look=lambda look, name=reproduction.name: console.print(
                f"{name}: {look['n_seeds']} seeds, "
                f"{len(look['inconclusive'])} claim(s) inconclusive",
                markup=False,
            ),
        )
        path = store.append(record)
        records.append(record)
        _print_claims(console, record)
        console.print(f"record: {path}", soft_wrap=True, markup=False, highlight=False)
    if as_json:
        typer.echo(json.dumps(records[0] if len(records) == 1 else records, indent=1))
    raise typer.Exit(0 if all(r["all_held"] for r in records) else 1)


def _check_out(out: Path) -> None:
    """``--out`` must be, or be creatable as, a writable directory (checked before any import
    of the harness, so a bad value fails at once)."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--out {out}: cannot create the directory ({err.strerror or err})") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(f"--out {out} is not writable")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _JobView:
    """What ``reproduce`` shows while a job runs.

    On a terminal: one live bar for the whole job (trials done, elapsed, ETA) and a line per
    worker with its current trial. Otherwise (a pipe, a log file): one line per finished trial.
    The claims table of each reproduction is printed when its record is written, followed by the
    record's path on its own line.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.job: Job | None = None
        self.live: Live | None = None

    def __enter__(self) -> _JobView:
        if self.console.is_terminal:
            self.live = Live(
                self, console=self.console, refresh_per_second=2, transient=True
            ).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def __rich__(self) -> Group:
        if self.job is None:
            return Group()
        p = self.job.progress()
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(p.total, 1), completed=p.done, width=20),
            Text(
                f"{p.done}/{p.total} trials · {_clock(p.elapsed_s)} elapsed · "
                f"ETA {_clock(p.eta_s)} · {p.workers} worker(s)"
            ),
        )
        lines = [
            Text(f"  worker {w + 1}: {trial.label} · {_clock(s)}") for w, trial, s in p.running
        ]
        return Group(head, *lines)

    def _line(self, text: str) -> None:
        """A plain line, never wrapped (paths stay copy-pasteable)."""
        self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def skipped(self, outcome: Outcome) -> None:
        request = outcome.request
        self._line(
            f"{request.name} [{request.scale}]: up to date (the store's latest record has the "
            "same code, packages, seeds and config; --fresh reruns it)"
        )
        self._claims(outcome)

    def trial_started(self, trial: Any, worker: int) -> None:
        """Shown by the live view."""

    def trial_done(self, result: TrialResult) -> None:
        if self.live is not None or self.job is None:
            return
        p = self.job.progress()
        width = len(str(p.total))
        status = f"{result.wall_time_s:.1f} s"
        if result.error is not None:
            status = f"FAILED ({result.error.splitlines()[0]})"
        self._line(
            f"[{p.done:>{width}}/{p.total}] {result.trial.label} · {status} · "
            f"elapsed {_clock(p.elapsed_s)} · ETA {_clock(p.eta_s)}"
        )

    def finished(self, outcome: Outcome) -> None:
        if outcome.record is not None:
            if outcome.resumed_trials:
                self._line(
                    f"{outcome.request.name} [{outcome.request.scale}]: "
                    f"{outcome.resumed_trials} trial(s) reused from the interrupted run"
                )
            self._claims(outcome)

    def _claims(self, outcome: Outcome) -> None:
        record = outcome.record
        assert record is not None
        _print_claims(self.console, record)
        if outcome.path is not None:
            self._line(f"record: {outcome.path}")


def _print_claims(console: Console, record: dict[str, Any]) -> None:
    info = record["run_info"]
    table = Table(
        title=f"{record['name']} — {record['title']} (arXiv {record['arxiv']})",
        caption=f"scale {record['scale']} · seeds {record['seeds']} · {info['device']} · "
        f"{info['wall_time_s']:.1f} s",
    )
    from optforge.repro.report.format import fmt_interval, fmt_number
    from optforge.repro.report.tables import claim_verdict

    table.add_column("claim", overflow="fold")  # whole names, folded, never cut with "…"
    for col in ("measured", "95% interval", "threshold", "result"):
        table.add_column(col)
    styles = {"held": "green", "failed": "red", "inconclusive": "yellow"}
    for claim in record["claims"]:
        verdict = claim_verdict(claim)
        text = "FAILED" if verdict == "failed" else verdict
        table.add_row(
            escape(str(claim["name"])),
            fmt_number(claim["value"]),
            fmt_interval(claim.get("interval")),
            escape(f"{claim['op']} {fmt_number(claim['threshold'])}"),
            f"[{styles[verdict]}]{text}[/{styles[verdict]}]",
        )
    console.print(table)


@app.command("report")
def report_command(
    out: Annotated[
        Path, typer.Option(help="Results store directory (report is written there).")
    ] = Path("optforge-runs"),
    scale: Annotated[
        list[str] | None,
        typer.Option(help="Only runs at this scale (repeatable; default: every scale)."),
    ] = None,
) -> None:
    """Render the latest run of every reproduction and scale into report.md, report.html and
    PNG plots."""
    from optforge.repro import SCALES
    from optforge.repro.report import load_latest, render_report
    from optforge.repro.store import RunStore

    bad = [s for s in scale or [] if s not in SCALES]
    if bad:
        raise CliError(f"--scale must be one of {', '.join(SCALES)}, got {bad[0]!r}")
    records = load_latest(RunStore(out), scales=scale)
    if not records:
        at = f" at scale {', '.join(scale)}" if scale else ""
        raise CliError(f"no runs{at} in {out}; run `optforge reproduce` first")
    paths = render_report(records, out)
    typer.echo(f"wrote {paths['markdown']} and {paths['html']} ({len(records)} runs)")


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
    from optforge.repro.runner import validate_request
    from optforge.repro.store import RunStore

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
    """Entry point: run the app; every error is one line on stderr with exit status 2.

    ``--debug`` anywhere in ``argv`` (or ``OPTFORGE_DEBUG=1``) prints the traceback first.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG["on"] = "--debug" in args
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="optforge", standalone_mode=False)
    except CliError as err:
        _fail(str(err), err)
    except (_click_exceptions.UsageError, click.exceptions.UsageError) as err:
        if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:
            typer.echo(err.ctx.get_help())
            sys.exit(0)
        _fail(err.format_message().splitlines()[0], err)
    except Aborted as err:
        typer.echo(f"optforge: {err}", err=True)
        sys.exit(130)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("optforge: aborted", err=True)
        sys.exit(130)
    except Exception as err:  # anything else: one line naming it, never a traceback by default
        _fail(_describe(err), err, hint=True)
    if code == 130:  # typer turns a Ctrl-C outside `reproduce` into exit status 130
        typer.echo("optforge: aborted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, err: BaseException, hint: bool = False) -> None:
    if _debug():
        traceback.print_exception(err)
    more = " (--debug shows the traceback)" if hint and not _debug() else ""
    first = message.splitlines()[0] if message else type(err).__name__
    typer.echo(f"optforge: error: {first}{more}", err=True)
    sys.exit(2)


def _describe(err: BaseException) -> str:
    """One line naming what went wrong: the file and the cause for OS errors."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or type(err).__name__}: {err.filename}"
    name = type(err).__name__
    text = str(err).strip()
    if type(err).__module__.startswith("optforge") and text:
        return text
    return f"{name}: {text}" if text else name


if __name__ == "__main__":
    main()
