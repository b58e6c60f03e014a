"""Docs tables generated from committed run records, never typed by hand.

The quick-scale record of each reproduction is committed as ``docs/records/<name>.json`` (a copy
of the store's record, unchanged). Each method page ``docs/methods/<name>.md`` marks where its
claims table goes::

    <!-- claims:begin -->
    (generated: the claims table, then the run, machine and package versions)
    <!-- claims:end -->

and this module rewrites what lies between the markers from the record; a page whose record is
not committed yet gets a block saying so ("no committed record yet") and how to make one. A
file may also carry ``<!-- claims-summary:begin -->`` … ``<!-- claims-summary:end -->``
(``--summary FILE``, e.g. README.md): one row per method page with the paper and its held /
failed / inconclusive counts (or "no committed record yet"), then the machines and package
versions of the records. Usage::

    python -m optforge.repro.doc_tables collect --store optforge-runs   # store → docs/records
    python -m optforge.repro.doc_tables write --summary README.md --summary docs/index.md
    python -m optforge.repro.doc_tables write --check --summary README.md --summary docs/index.md

Exit status: 0 done (or up to date with ``--check``), 1 a page is out of date (``--check``),
2 an error (unreadable record, markers missing or out of order in a page that has a record).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optforge.repro.report.format import md_text, safe_stem
from optforge.repro.report.render import check_record, load_latest
from optforge.repro.report.tables import claims_rows, verdict_counts

__all__ = [
    "NO_RECORD",
    "claims_block",
    "collect",
    "load_records",
    "missing_block",
    "replace_between",
    "summary_block",
    "write_tables",
]

BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- claims-summary:begin -->", "<!-- claims-summary:end -->"
NO_RECORD = "no committed record yet"
_NOTE = "<!-- generated from the record named below; edit the record, not this table -->"
_VERDICT_MD = {"held": "**held**", "failed": "**FAILED**", "inconclusive": "*inconclusive*"}


class DocTablesError(ValueError):
    """A record or page the generator cannot use; the message names the file."""


def load_records(records_dir: Path) -> dict[str, dict[str, Any]]:
    """``name → record`` of every ``*.json`` in ``records_dir``."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            record = check_record(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise DocTablesError(f"{path}: {err}") from err
        records[record["name"]] = {**record, "_path": path.as_posix()}
    return records


def _seeds_text(seeds: Sequence[Any]) -> str:
    ints = [s for s in seeds if isinstance(s, int)]
    if len(ints) == len(seeds) and len(ints) > 2 and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}–{ints[-1]}"
    return ", ".join(str(s) for s in seeds)


def _machine_text(record: Mapping[str, Any]) -> str:
    info = record.get("run_info", {})
    return (
        f"{md_text(info.get('platform', '?'))}, {md_text(info.get('device', '?'))} "
        f"({md_text(info.get('device_name', '?'))}), {md_text(info.get('threads', '?'))} thread(s)"
    )


def _versions_text(record: Mapping[str, Any]) -> str:
    info = record.get("run_info", {})
    packages = info.get("packages") if isinstance(info.get("packages"), Mapping) else {}
    versions = {
        "python": info.get("python"),
        "torch": info.get("torch_version"),
        "numpy": info.get("numpy_version"),
        **{k: v for k, v in packages.items() if v and k not in ("torch", "numpy")},
        "optforge": info.get("optforge_version"),
    }
    return md_text(", ".join(f"{k} {v}" for k, v in versions.items() if v))


def _git_text(record: Mapping[str, Any]) -> str:
    git = str(record.get("run_info", {}).get("git_revision") or "?")
    return git[:12] + ("+dirty" if git.endswith("+dirty") else "") if len(git) > 12 else git


def _provenance(record: Mapping[str, Any], source: str, link: str) -> str:
    info = record.get("run_info", {})
    wall = info.get("wall_time_s")
    wall_text = f", {wall:.0f} s wall" if isinstance(wall, (int, float)) else ""
    level = next(
        (c.get("interval_level") for c in record["claims"] if c.get("interval_level")), 0.95
    )
    seeds = record.get("seeds", [])
    lines = [
        f"Generated from [`{md_text(source)}`]({md_text(link)}) by "
        "`python -m optforge.repro.doc_tables`: run "
        f"`{md_text(record.get('run_id', '?'))}` of {md_text(record.get('created', '?'))}, "
        f"{md_text(record['scale'])} scale, {len(seeds)} seeds "
        f"({md_text(_seeds_text(seeds))}){md_text(wall_text)}; intervals: "
        f"{100 * float(level):.4g}% bootstrap over seeds.",
        f"Machine: {_machine_text(record)}. Versions: {_versions_text(record)}; "
        f"git {md_text(_git_text(record))}.",
        f"Repeat: `optforge reproduce {md_text(record['name'])} --scale "
        f"{md_text(record['scale'])}`.",
    ]
    return "\n".join(lines)


def _code(text: str) -> str:
    """Text for a code span in a table cell (code spans show HTML as text)."""
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")


def claims_block(record: Mapping[str, Any], source: str, page: Path | None = None) -> str:
    """The Markdown between the claim markers of ``record``'s page (``source``: the record's
    file, linked relative to ``page``)."""
    link = os.path.relpath(source, page.parent) if page is not None else source
    rows = [
        "| claim | measured quantity | value | 95% interval | threshold | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in claims_rows(record):
        rows.append(
            f"| `{_code(row['claim'])}` | {md_text(row['quantity'])} | "
            f"{md_text(row['value'])} | {md_text(row['interval'])} | "
            f"{md_text(row['threshold'])} | {_VERDICT_MD[row['verdict']]} |"
        )
    counts = verdict_counts(record["claims"])
    total = sum(counts.values())
    head = (
        f"{counts['held']}/{total} claims held, {counts['failed']} failed, "
        f"{counts['inconclusive']} inconclusive."
    )
    return "\n".join([_NOTE, "", head, "", *rows, "", _provenance(record, source, link)])


def missing_block(name: str, source: str) -> str:
    """The block between the claim markers of a page whose record is not committed yet."""
    stem = md_text(safe_stem(name))
    return "\n".join(
        [
            "<!-- generated: no record committed for this page; edit the record, not this text -->",
            "",
            f"**{NO_RECORD}**: `{md_text(source)}` does not exist, so no claims table is "
            "generated here. Make it with `optforge reproduce "
            f"{stem} --scale quick`, then `python -m optforge.repro.doc_tables collect` and "
            "`python -m optforge.repro.doc_tables write --summary README.md "
            "--summary docs/index.md`.",
        ]
    )


def _page_title(page: Path) -> str:
    """The page's first ``# `` heading (its file stem when it has none)."""
    if page.exists():
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].replace("`", "").strip()
    return page.stem


def summary_block(
    records: Mapping[str, Mapping[str, Any]],
    link_prefix: str = "",
    *,
    pages: Mapping[str, Path] | None = None,
) -> str:
    """One row per method (every page in ``pages`` and every record): the paper, its held /
    failed / inconclusive counts or "no committed record yet", linking to its page
    (``link_prefix`` + file name); then the machines and package versions of the records."""
    pages = dict(pages or {})
    rows = [
        "| reproduction | paper | scale | held | failed | inconclusive | run |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted({*records, *pages}):
        link = f"[`{md_text(name)}`]({link_prefix}{safe_stem(name)}.md)"
        record = records.get(name)
        if record is None:
            title = md_text(_page_title(pages[name]))
            rows.append(f"| {link} | {title} | – | {NO_RECORD} | – | – | – |")
            continue
        counts = verdict_counts(record["claims"])
        total = sum(counts.values())
        arxiv = str(record.get("arxiv") or "")
        paper = md_text(record.get("title", name))
        if arxiv:
            paper += f" ({md_text(arxiv)})"
        created = md_text(str(record.get("created", "?"))[:10])
        rows.append(
            f"| {link} | {paper} | {md_text(record['scale'])} | {counts['held']}/{total} | "
            f"{counts['failed']} | {counts['inconclusive']} | "
            f"`{md_text(record.get('run_id', '?'))}` ({created}, git "
            f"{md_text(_git_text(record))}) |"
        )
        groups.setdefault((_machine_text(record), _versions_text(record)), []).append(name)
    with_record = sum(1 for name in pages if name in records)
    lines = [
        "<!-- generated from docs/records/*.json by python -m optforge.repro.doc_tables; "
        "edit the records, not this table -->",
        "",
        *rows,
        "",
        f"{with_record} of {len(pages)} method pages have a committed record "
        f"({len(records)} record(s) in all).",
    ]
    for (machine, versions), names in groups.items():
        lines += ["", f"Machine: {machine}. Versions: {versions}. Records: {', '.join(names)}."]
    return "\n".join(lines)


def replace_between(text: str, begin: str, end: str, block: str) -> str | None:
    """``text`` with what lies between ``begin`` and ``end`` replaced by ``block``; ``None``
    when the markers are absent; :class:`DocTablesError` when only one is, or out of order."""
    if begin not in text and end not in text:
        return None
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise DocTablesError(f"needs one {begin} followed by one {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def write_tables(
    records_dir: Path,
    pages_dir: Path,
    *,
    summary_files: Sequence[Path] = (),
    check: bool = False,
) -> dict[str, str]:
    """Rewrite every page's generated blocks; returns ``file → status`` (``updated``,
    ``up to date``, ``no markers``, ``no page``; with ``check`` ``out of date`` instead of
    ``updated``, and nothing is written). Every ``*.md`` of ``pages_dir`` gets its record's
    claims table, or the "no committed record yet" block when its record is missing."""
    records = load_records(records_dir)
    pages = {page.stem: page for page in sorted(Path(pages_dir).glob("*.md"))}
    status: dict[str, str] = {}
    targets: list[tuple[Path, str, str, str]] = []
    for name, record in records.items():
        page = Path(pages_dir) / f"{safe_stem(name)}.md"
        if not page.exists():
            status[page.as_posix()] = "no page"
            continue
        targets.append((page, BEGIN, END, claims_block(record, record["_path"], page)))
    for name, page in pages.items():
        if name not in records:
            source = (Path(records_dir) / f"{name}.json").as_posix()
            targets.append((page, BEGIN, END, missing_block(name, source)))
    for path in summary_files:
        prefix = Path(os.path.relpath(Path(pages_dir), Path(path).parent)).as_posix() + "/"
        block = summary_block(records, prefix, pages=pages)
        targets.append((Path(path), SUMMARY_BEGIN, SUMMARY_END, block))
    for path, begin, end, block in targets:
        text = path.read_text(encoding="utf-8")
        try:
            new = replace_between(text, begin, end, block)
        except DocTablesError as err:
            raise DocTablesError(f"{path}: {err}") from err
        if new is None:
            status[path.as_posix()] = "no markers"
        elif new == text:
            status[path.as_posix()] = "up to date"
        elif check:
            status[path.as_posix()] = "out of date"
        else:
            path.write_text(new, encoding="utf-8")
            status[path.as_posix()] = "updated"
    return status


def collect(store_dir: Path, records_dir: Path, scale: str = "quick") -> list[Path]:
    """Copy the latest ``scale`` record of each reproduction in the store to
    ``records_dir/<name>.json`` (unchanged; records are never edited)."""
    from optforge.repro.store import RunStore

    Path(records_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for record in load_latest(RunStore(store_dir), scales=[scale]):
        path = Path(records_dir) / f"{safe_stem(record['name'])}.json"
        path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optforge.repro.doc_tables",
        description="Docs claims tables from committed run records.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    col = sub.add_parser("collect", help="copy the store's latest records into docs/records")
    col.add_argument("--store", type=Path, default=Path("optforge-runs"))
    col.add_argument("--records", type=Path, default=Path("docs/records"))
    col.add_argument("--scale", default="quick")
    wri = sub.add_parser("write", help="rewrite the claims tables of the method pages")
    wri.add_argument("--records", type=Path, default=Path("docs/records"))
    wri.add_argument("--pages", type=Path, default=Path("docs/methods"))
    wri.add_argument(
        "--summary", type=Path, action="append", default=[], help="also this file (README.md)"
    )
    wri.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            for path in collect(args.store, args.records, args.scale):
                print(f"wrote {path}")
            return 0
        status = write_tables(
            args.records, args.pages, summary_files=args.summary, check=args.check
        )
    except (OSError, ValueError) as err:
        print(f"doc_tables: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    for path, what in sorted(status.items()):
        print(f"{what:>11}: {path}")
    return 1 if "out of date" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
