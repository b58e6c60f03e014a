"""Render the latest record of every reproduction into ``report.md``, ``report.html`` and one
PNG plot per reproduction (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def render_report(records: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write the report files for ``records`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = {r["name"]: plot_record(r, out / "plots" / f"{r['name']}.png") for r in records}
    md_path = out / "report.md"
    md_path.write_text(_markdown(records, plots, out))
    html_path = out / "report.html"
    html_path.write_text(_html(records, plots))
    return {"markdown": md_path, "html": html_path, **{f"plot:{k}": v for k, v in plots.items()}}


def claims_rows(record: dict[str, Any]) -> list[list[str]]:
    """Rows ``[claim, statement, value, op threshold, held]`` for one record."""
    rows = []
    for claim in record["claims"]:
        value = "n/a" if claim["value"] is None else f"{claim['value']:.4g}"
        rows.append(
            [
                claim["name"],
                claim["statement"],
                value,
                f"{claim['op']} {claim['threshold']:.4g}",
                "held" if claim["held"] else "FAILED",
            ]
        )
    return rows


def method_table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Mean ± std over seeds of every scalar metric, one row per method."""
    metrics = record["metrics"]
    names: list[str] = []
    for per_seed in metrics.values():
        for values in per_seed.values():
            for key, val in values.items():
                if (isinstance(val, (int, float)) or val is None) and key not in names:
                    names.append(key)
    rows = []
    for method, per_seed in metrics.items():
        row = [method]
        for key in names:
            vals = [v.get(key) for v in per_seed.values()]
            finite = [float(v) for v in vals if isinstance(v, (int, float))]
            if not finite:
                row.append("n/a")
            elif len(finite) == 1:
                row.append(f"{finite[0]:.4g}")
            else:
                row.append(f"{np.mean(finite):.4g} ± {np.std(finite):.2g}")
        rows.append(row)
    return ["method", *names], rows


def plot_record(record: dict[str, Any], path: Path) -> Path:
    """One PNG: mean curves (min–max band over seeds) if the run logged curves, else bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = record.get("plot", {})
    x_key = spec.get("x", "step")
    y_keys = list(spec.get("y") or [])
    metrics = record["metrics"]
    if not y_keys:
        y_keys = sorted(
            {
                k
                for per_seed in metrics.values()
                for values in per_seed.values()
                for k, v in values.items()
                if isinstance(v, list) and k != x_key
            }
        )[:2]
    curves = [k for k in y_keys if _has_curve(metrics, k)]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
        for ax, key in zip(axes[0], curves, strict=True):
            for method, per_seed in metrics.items():
                ys = [v[key] for v in per_seed.values() if isinstance(v.get(key), list)]
                if not ys:
                    continue
                length = min(len(y) for y in ys)
                arr = np.array([[np.nan if u is None else u for u in y[:length]] for y in ys])
                first = next(iter(per_seed.values()))
                xs = first.get(x_key)
                x = np.asarray(xs[:length]) if isinstance(xs, list) else np.arange(length)
                with warnings.catch_warnings():  # curves may be NaN before a burn-in
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, low, high = (f(arr, axis=0) for f in (np.nanmean, np.nanmin, np.nanmax))
                (line,) = ax.plot(x, mean, label=method)
                if arr.shape[0] > 1:
                    ax.fill_between(x, low, high, alpha=0.15, color=line.get_color())
            ax.set_xlabel(x_key)
            ax.set_ylabel(key)
            if spec.get("logy"):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    else:
        header, _rows = method_table(record)
        keys = header[1:3]
        fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(5.5 * max(1, len(keys)), 4))
        axes = np.atleast_1d(axes)
        for ax, key in zip(axes, keys, strict=False):
            means, errs, labels = [], [], []
            for method, per_seed in metrics.items():
                vals = [float(v[key]) for v in per_seed.values() if _is_num(v.get(key))]
                labels.append(method)
                means.append(np.mean(vals) if vals else np.nan)
                errs.append(np.std(vals) if vals else 0.0)
            ax.bar(labels, means, yerr=errs, capsize=3)
            ax.set_ylabel(key)
            ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{record['name']} ({record['scale']}, {len(record['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_curve(metrics: dict[str, Any], key: str) -> bool:
    return any(
        isinstance(v.get(key), list) for per_seed in metrics.values() for v in per_seed.values()
    )


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in records:
        held = sum(c["held"] for c in r["claims"])
        rows.append(
            [
                r["name"],
                r["scale"],
                str(len(r["seeds"])),
                f"{held}/{len(r['claims'])}",
                "all held" if r["all_held"] else "some FAILED",
                f"{r['run_info']['wall_time_s']:.1f}",
                r["created"],
            ]
        )
    return rows


_SUMMARY_HEADER = ["reproduction", "scale", "seeds", "claims held", "verdict", "wall s", "run at"]
_CLAIMS_HEADER = ["claim", "paper statement tested", "measured", "threshold", "result"]


def _markdown(records: Sequence[dict[str, Any]], plots: dict[str, Path], out: Path) -> str:
    parts = ["# optforge reproduction report", ""]
    if not records:
        return "# optforge reproduction report\n\nNo runs in the store yet.\n"
    parts += [_md_table(_SUMMARY_HEADER, _summary_rows(records)), ""]
    for r in records:
        info = r["run_info"]
        parts += [
            f"## {r['name']}: {r['title']}",
            "",
            f"arXiv [{r['arxiv']}](https://arxiv.org/abs/{r['arxiv']}) · scale `{r['scale']}` · "
            f"seeds {r['seeds']} · device {info['device']} ({info['device_name']}) · "
            f"{info['threads']} thread(s) · torch {info['torch_version']} · "
            f"git {info['git_revision']} · run `{r['run_id']}`",
            "",
            _md_table(_CLAIMS_HEADER, claims_rows(r)),
            "",
            _md_table(*method_table(r)),
            "",
            f"![{r['name']}]({plots[r['name']].relative_to(out).as_posix()})",
            "",
        ]
    return "\n".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = ""
    for row in rows:
        cells = ""
        for cell in row:
            cls = ' class="fail"' if cell in ("FAILED", "some FAILED") else ""
            cls = ' class="ok"' if cell in ("held", "all held") else cls
            cells += f"<td{cls}>{html.escape(str(cell))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(records: Sequence[dict[str, Any]], plots: dict[str, Path]) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".ok{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}"
        "img{max-width:100%}"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>optforge reproduction report</title><style>{style}</style></head><body>",
        "<h1>optforge reproduction report</h1>",
    ]
    if not records:
        parts.append("<p>No runs in the store yet.</p>")
    else:
        parts.append(_html_table(_SUMMARY_HEADER, _summary_rows(records)))
    for r in records:
        info = r["run_info"]
        png = base64.b64encode(plots[r["name"]].read_bytes()).decode()
        parts += [
            f"<h2>{html.escape(r['name'])}: {html.escape(r['title'])}</h2>",
            f"<p>arXiv <a href='https://arxiv.org/abs/{r['arxiv']}'>{r['arxiv']}</a> · "
            f"scale {r['scale']} · seeds {r['seeds']} · {html.escape(info['device'])} · "
            f"torch {info['torch_version']} · git {info['git_revision']}</p>",
            _html_table(_CLAIMS_HEADER, claims_rows(r)),
            _html_table(*method_table(r)),
            f"<img alt='{html.escape(r['name'])}' src='data:image/png;base64,{png}'>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
