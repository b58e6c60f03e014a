"""Select the runs to show and render them into ``report.md``, ``report.html`` and PNG plots.

The store is not trusted: every record is checked for the shape the report reads (a bad one is
a :class:`ReportError` naming the run and the field), file names and HTML ids are reduced to
``[A-Za-z0-9_.-]`` (a record named ``../../escaped`` writes ``plots/escaped-quick.png``, inside
the report folder), links are only built from values that match their pattern (an arXiv id), and
every field goes through Jinja2 templates with autoescape on.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from optforge.repro.registry import SCALES
from optforge.repro.report.format import fmt_number, is_number, md_text, safe_stem
from optforge.repro.report.plots import plot_claims_overview, plot_record
from optforge.repro.report.tables import (
    CLAIMS_HEADER,
    claim_verdict,
    claims_rows,
    oriented_method_table,
    verdict_counts,
)

__all__ = ["ReportError", "check_record", "load_latest", "render_report", "select_latest"]

_ARXIV = re.compile(r"(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?")


class ReportError(ValueError):
    """A record the report cannot read; the message names the run and the field."""


def check_record(record: Any) -> dict[str, Any]:
    """``record`` if it has the shape the report reads, else :class:`ReportError`."""
    if not isinstance(record, Mapping):
        raise ReportError(f"a record in the store is a {type(record).__name__}, not an object")
    run = record.get("run_id", "?")

    def bad(field: str, expected: str) -> ReportError:
        return ReportError(f"record {str(run)[:40]!r}: {field} is not {expected}")

    for field in ("name", "scale"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise bad(field, "a non-empty string")
    claims = record.get("claims")
    if not isinstance(claims, list) or not all(isinstance(c, Mapping) for c in claims):
        raise bad("claims", "a list of objects")
    metrics = record.get("metrics")
    if not isinstance(metrics, Mapping) or not all(
        isinstance(per_seed, Mapping) and all(isinstance(v, Mapping) for v in per_seed.values())
        for per_seed in metrics.values()
    ):
        raise bad("metrics", "an object method → seed → metrics")
    for field in ("run_info", "plot"):
        if field in record and not isinstance(record[field], Mapping):
            raise bad(field, "an object")
    if "seeds" in record and not isinstance(record["seeds"], list):
        raise bad("seeds", "a list")
    return dict(record)


def _scale_key(record: Mapping[str, Any]) -> tuple[str, int, str]:
    scale = record["scale"]
    rank = SCALES.index(scale) if scale in SCALES else len(SCALES)
    return (record["name"], rank, scale)


def select_latest(
    records: Iterable[Any], scales: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The last record of each (name, scale) in ``records`` (oldest first), optionally only at
    ``scales``, sorted by name then scale (smoke, quick, full)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        checked = check_record(record)
        latest[(checked["name"], checked["scale"])] = checked
    chosen = [r for r in latest.values() if not scales or r["scale"] in scales]
    return sorted(chosen, key=_scale_key)


def load_latest(store: Any, scales: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The latest record of every (name, scale) in a :class:`~optforge.repro.RunStore`."""
    if hasattr(store, "latest_per_scale"):
        return select_latest(store.latest_per_scale(), scales)
    names = [check_record(r)["name"] for r in store.latest()]
    return select_latest((r for name in names for r in store.history(name)), scales)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _info(record: Mapping[str, Any], key: str) -> str:
    value = record.get("run_info", {}).get(key)
    return "?" if value is None else str(value)


def _wall(record: Mapping[str, Any]) -> float:
    value = record.get("run_info", {}).get("wall_time_s")
    return float(value) if is_number(value) else 0.0


def _wall_span(records: list[Mapping[str, Any]]) -> float:
    """Wall-clock time covered by ``records``: the union of their ``[created − wall, created]``
    intervals. Reproductions run in one pool (``reproduce --all``) overlap in time, so the sum
    of their wall times would count the same minutes several times."""
    spans = []
    for record in records:
        try:
            end = _dt.datetime.fromisoformat(str(record.get("created"))).timestamp()
        except ValueError:
            spans.append((0.0, _wall(record), True))  # no time stamp: counted on its own
            continue
        spans.append((end - _wall(record), end, False))
    total, reach = 0.0, -math.inf
    for start, end, alone in sorted(spans):
        if alone:
            total += end - start
        elif end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _machine(record: Mapping[str, Any]) -> str:
    return (
        f"{_info(record, 'platform')} · {_info(record, 'device')} ({_info(record, 'device_name')})"
        f" · {_info(record, 'threads')} thread(s) · torch {_info(record, 'torch_version')} · "
        f"numpy {_info(record, 'numpy_version')} · python {_info(record, 'python')}"
    )


def _run_view(record: dict[str, Any], stem: str, plot: Path, out: Path) -> dict[str, Any]:
    claims = record["claims"]
    counts = verdict_counts(claims)
    arxiv = str(record.get("arxiv", ""))
    seeds = record.get("seeds", [])
    header, rows = oriented_method_table(record)
    sequential = record.get("sequential")
    looks = []
    if isinstance(sequential, Mapping) and isinstance(sequential.get("looks"), list):
        looks = [
            str(look.get("n_seeds", "?"))
            for look in sequential["looks"]
            if isinstance(look, Mapping)
        ]
    if counts["failed"]:
        overall = "failed"
    elif counts["inconclusive"]:
        overall = "inconclusive"
    else:
        overall = "held"
    return {
        "name": record["name"],
        "title": str(record.get("title", "")),
        "scale": record["scale"],
        "anchor": f"run-{stem}",
        "arxiv": arxiv,
        "arxiv_url": f"https://arxiv.org/abs/{arxiv}" if _ARXIV.fullmatch(arxiv) else None,
        "seeds": ", ".join(str(s) for s in seeds),
        "n_seeds": len(seeds),
        "created": str(record.get("created", "?")),
        "run_id": str(record.get("run_id", "?")),
        "device": f"{_info(record, 'device')} ({_info(record, 'device_name')})",
        "threads": _info(record, "threads"),
        "torch": _info(record, "torch_version"),
        "git": _info(record, "git_revision"),
        "wall": _duration(_wall(record)),
        "counts": counts,
        "n_claims": len(claims),
        "overall": overall,
        "overall_text": {"held": "all held", "failed": "some FAILED"}.get(
            overall, "some inconclusive"
        ),
        "claims": claims_rows(record),
        "metrics_header": header,
        "metrics_rows": rows,
        "plot_file": plot.relative_to(out).as_posix(),
        "plot_data": base64.b64encode(plot.read_bytes()).decode("ascii"),
        "looks": looks,
    }


def render_report(
    records: Iterable[Any], out_dir: str | Path, *, scales: Sequence[str] | None = None
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` under ``out_dir``.

    Shows the last record of each (name, scale) in ``records`` (only ``scales`` if given),
    grouped by reproduction. Returns the paths: ``markdown``, ``html``, ``overview`` (when there
    are claims) and ``plot:<name>:<scale>`` (plus ``plot:<name>`` for the first scale of each).
    """
    out = Path(out_dir)
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    root = plots_dir.resolve()
    chosen = select_latest(records, scales)
    paths: dict[str, Path] = {}
    views: list[dict[str, Any]] = []
    used: set[str] = set()
    for record in chosen:
        stem = base = safe_stem(f"{record['name']}-{record['scale']}")
        suffix = 2
        while stem in used:
            stem, suffix = f"{base}-{suffix}", suffix + 1
        used.add(stem)
        plot = plots_dir / f"{stem}.png"
        if plot.resolve().parent != root:  # cannot happen with safe_stem; checked anyway
            raise ReportError(f"record {record.get('run_id')!r}: unsafe plot path {plot}")
        plot_record(record, plot)
        paths[f"plot:{record['name']}:{record['scale']}"] = plot
        paths.setdefault(f"plot:{record['name']}", plot)
        views.append(_run_view(record, stem, plot, out))

    groups: list[dict[str, Any]] = []
    for view in views:
        if not groups or groups[-1]["name"] != view["name"]:
            groups.append(
                {
                    "name": view["name"],
                    "title": view["title"],
                    "anchor": f"paper-{safe_stem(view['name'])}-{len(groups)}",
                    "runs": [],
                }
            )
        groups[-1]["runs"].append(view)

    overview_rows = [
        {
            "label": f"{record['name']} [{record['scale']}] {claim.get('name', '')}",
            "group": (record["name"], record["scale"]),
            "claim": {**claim, "verdict": claim_verdict(claim)},
        }
        for record in chosen
        for claim in record["claims"]
    ]
    overview = None
    if overview_rows:
        overview = plot_claims_overview(overview_rows, plots_dir / "claims-overview.png")
        paths["overview"] = overview

    totals = []
    for scale in sorted({v["scale"] for v in views}, key=lambda s: (s not in SCALES, s)):
        at_scale = [r for r in chosen if r["scale"] == scale]
        counts = verdict_counts([c for r in at_scale for c in r["claims"]])
        totals.append(
            {
                "scale": scale,
                "runs": len(at_scale),
                "total": sum(counts.values()),
                **counts,
                "wall": _duration(_wall_span(at_scale)),
            }
        )
    context = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "groups": groups,
        "views": views,
        "totals": totals,
        "wall_total": _duration(_wall_span(chosen)),
        "machines": sorted({_machine(r) for r in chosen}),
        "claims_header": CLAIMS_HEADER,
        "overview_file": overview.relative_to(out).as_posix() if overview else None,
        "overview_data": base64.b64encode(overview.read_bytes()).decode("ascii")
        if overview
        else None,
        "scales_filter": list(scales or []),
    }
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(_template("report.md.j2").render(context), encoding="utf-8")
    html_path.write_text(_template("report.html.j2").render(context), encoding="utf-8")
    return {"markdown": md_path, "html": html_path, **paths}


def _md_cell(value: Any) -> Any:
    """:func:`md_text`, marked safe so autoescape leaves its entities alone."""
    from markupsafe import Markup

    return Markup(md_text(value))


@functools.cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("optforge.repro.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md_cell
    env.filters["num"] = fmt_number
    return env


def _template(name: str) -> Any:
    return _environment().get_template(name)
