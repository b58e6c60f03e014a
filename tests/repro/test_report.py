"""The report: latest run per (name, scale), claims with quantity/interval/verdict, readable
numbers, and a store that is not trusted (crafted names and fields)."""

import json
import re
import sqlite3
from html.parser import HTMLParser

import numpy as np
import pytest

from optforge import cli
from optforge.repro import Claim, RunStore
from optforge.repro.report import ReportError, render_report, select_latest
from optforge.repro.report.format import fmt_interval, fmt_mean_sd, fmt_number, md_text, safe_stem
from optforge.repro.report.plots import bootstrap_mean_band
from optforge.repro.report.tables import oriented_method_table
from optforge.repro.runner import build_record


def _record(name="toy", scale="quick", seeds=3, offset=1.0, threshold=0.5, methods=("a", "b")):
    metrics = {}
    for k, method in enumerate(methods):
        metrics[method] = {}
        for s in range(100, 100 + seeds):
            rng = np.random.default_rng(s + 10 * k)
            metrics[method][s] = {
                "score": offset * (k == 0) + 0.1 * rng.standard_normal(),
                "step": [0, 1, 2, 3],
                "loss": [float(np.exp(-t) + 0.01 * rng.random()) for t in range(4)],
            }
    claims = [
        Claim(
            "a-beats-b",
            "A is better than B.",
            lambda r: r.mean_gap("a", "b", "score"),
            ">=",
            threshold,
            quantity="mean score, A − B (points)",
        )
    ]
    return build_record(
        name=name,
        title="A toy paper",
        arxiv="2401.00001",
        spec="none.md",
        scale=scale,
        seeds=list(range(100, 100 + seeds)),
        config={},
        metrics=metrics,
        claims=claims,
        device="cpu",
        threads=1,
        precision="float32",
        effective_batch_size=None,
        executor="local",
        wall_time_s=30.0,
        peak_memory_mb=0.0,
        trials=[],
        plot={"x": "step", "y": ["loss"], "logy": False},
    )


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]


def test_numbers_are_formatted_for_reading():
    assert fmt_mean_sd(0.1, 1.4e-17) == "0.1"  # seeds agree to float precision
    assert fmt_mean_sd(0.8907, 0.1) == "0.89 ± 0.10"
    assert fmt_mean_sd(880.0, 140.0) == "880 ± 140"
    assert fmt_mean_sd(4150.0, 870.0) == "4150 ± 870"
    assert fmt_mean_sd(2.2e-12, 1e-12) == "2.2e-12 ± 1e-12"
    assert fmt_number(2.235e-12) == "2.24e-12" and fmt_number(0.1405) == "0.1405"
    assert fmt_number(None) == "n/a" and fmt_number(7) == "7"
    assert fmt_interval([None, 2.0]) == "[−∞, 2]" and fmt_interval(None) == "—"


def test_safe_stem_and_markdown_text():
    assert safe_stem("../../escaped") == "escaped"
    assert safe_stem("..") == "run" and safe_stem("a/b c") == "a-b-c"
    assert md_text("[x](javascript:alert(1)) | `c` <b>") == (
        "[x\\](javascript:alert(1)) \\| \\`c\\` &lt;b&gt;"
    )


def test_latest_run_of_each_name_and_scale_is_shown_grouped(tmp_path, capsys):
    store = RunStore(tmp_path)
    quick_old, quick, smoke = (
        _record(offset=0.0),
        _record(),
        _record(scale="smoke", seeds=1),
    )
    for record in (quick_old, quick, smoke):
        store.append(record)
    chosen = select_latest([quick_old, quick, smoke])
    assert [(r["scale"], r["run_id"]) for r in chosen] == [
        ("smoke", smoke["run_id"]),
        ("quick", quick["run_id"]),
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--out", str(tmp_path)])
    assert exit_info.value.code == 0
    html = (tmp_path / "report.html").read_text()
    assert quick["run_id"] in html and smoke["run_id"] in html
    assert quick_old["run_id"] not in html
    assert html.count("<h2>toy: A toy paper</h2>") == 1  # one group, two runs
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--out", str(tmp_path), "--scale", "quick"])
    assert exit_info.value.code == 0
    html = (tmp_path / "report.html").read_text()
    assert quick["run_id"] in html and smoke["run_id"] not in html
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--out", str(tmp_path), "--scale", "full"])
    assert exit_info.value.code == 2 and "no runs at scale full" in capsys.readouterr().err


def test_claims_table_summary_and_overview(tmp_path):
    held = {**_record(name="held-one"), "created": "2026-12-06T08:00:00+00:00"}
    unsure = _record(name="unsure", threshold=1.0, seeds=4)  # gap ≈ 1 ± noise: straddles
    unsure["created"] = "2026-12-06T09:00:00+00:00"  # run after held-one: 30 s + 30 s
    assert unsure["claims"][0]["verdict"] == "inconclusive"
    paths = render_report([held, unsure], tmp_path)
    html = paths["html"].read_text()
    assert "<th>measured quantity</th>" in html and "mean score, A − B (points)" in html
    assert "<th>95% interval</th>" in html
    assert '<td class="inconclusive">inconclusive</td>' in html
    assert '<td class="held">held</td>' in html
    assert "2 claims in 2 reproduction(s)" in html and "1 inconclusive" in html
    assert "Total wall time 60.0 s" in html and "Machine: " in html
    # Every run section is linked from the summary, and the overview figure is there.
    for anchor in ("run-held-one-quick", "run-unsure-quick", "claims-overview"):
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    assert paths["overview"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    assert "| a-beats-b | mean score, A − B (points) |" in md and "inconclusive" in md
    assert "](#run-unsure-quick)" in md


def test_wide_metric_tables_are_transposed_and_scroll(tmp_path):
    record = _record(methods=("a", "b"))
    for per_seed in record["metrics"].values():
        for values in per_seed.values():
            values.update({f"metric_{k}": float(k) for k in range(20)})
    header, rows = oriented_method_table(record)
    assert header == ["metric", "a", "b"] and len(rows) == 21
    html = render_report([record], tmp_path)["html"].read_text()
    assert html.count('<div class="scroll">') == 3  # summary, claims, metrics
    assert ".scroll{overflow-x:auto" in html


def test_bootstrap_band_of_curves():
    curves = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    mean, low, high = bootstrap_mean_band(curves)
    assert list(mean) == [2.0, 1.0]
    assert low[0] < 2.0 < high[0] and low[0] >= 0.0 and high[0] <= 4.0
    assert low[1] == high[1] == 1.0  # no spread, no band
    one = bootstrap_mean_band(curves[:1])
    assert list(one[1]) == list(one[2]) == [0.0, 1.0]


def test_older_records_without_verdicts_still_render(tmp_path):
    record = _record()
    for claim in record["claims"]:
        for key in ("verdict", "interval", "interval_level", "quantity", "n_seeds"):
            claim.pop(key)
    html = render_report([record], tmp_path)["html"].read_text()
    assert '<td class="held">held</td>' in html and "—" in html


def _crafted():
    record = _record()
    record["name"] = "../../escaped"
    record["arxiv"] = "<script>alert(1)</script>"
    record["scale"] = "<img src=x onerror=alert(2)>"
    record["seeds"] = ["<b>1</b>"]
    record["title"] = "$\\alpha$ <script>alert(3)</script>"
    record["run_info"]["torch_version"] = "<script>alert(4)</script>"
    record["run_info"]["git_revision"] = "'><script>alert(5)</script>"
    record["claims"][0]["statement"] = "</td><script>alert(6)</script>"
    record["claims"][0]["quantity"] = "[click](javascript:alert(7))"
    record["metrics"]["<script>m</script> $x$"] = record["metrics"].pop("a")
    return record


def test_a_crafted_record_cannot_escape_out_nor_inject_markup(tmp_path):
    out = tmp_path / "nested" / "out"
    paths = render_report([_crafted()], out)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p.startswith("nested/out/") for p in written), written
    assert not (tmp_path / "nested" / "escaped.png").exists()  # where ../../escaped pointed
    html = paths["html"].read_text()
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags
    assert not [a for a in parser.attrs if a[1].startswith("on")]
    hrefs = [v for tag, k, v in parser.attrs if k == "href"]
    assert all(h.startswith("#") or h.startswith("https://arxiv.org/abs/") for h in hrefs)
    assert "https://arxiv.org/abs/<" not in html and "javascript:" not in "".join(hrefs)
    md = paths["markdown"].read_text()
    assert "<script" not in md and "<img" not in md
    assert "\\](javascript:" in md and not re.search(r"(?<!\\)\]\(javascript:", md)


def test_a_record_of_the_wrong_shape_is_a_clear_error(tmp_path):
    record = _record()
    record["claims"] = "not a list"
    with pytest.raises(ReportError, match="claims"):
        render_report([record], tmp_path)


def _report_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--out", str(tmp_path)])
    return exit_info.value.code, capsys.readouterr().err


def test_a_corrupt_store_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "runs.sqlite").write_bytes(b"this is not an SQLite database" * 10)
    code, err = _report_cli(tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_stored_record_of_the_wrong_shape_is_one_line_and_exit_2(tmp_path, capsys):
    store = RunStore(tmp_path)
    record = _record()
    store.append(record)
    with sqlite3.connect(store.database) as connection:  # a crafted store: rewrite the row
        connection.execute("DROP TRIGGER IF EXISTS runs_no_update")
        connection.execute(
            "UPDATE runs SET record = ?", (json.dumps({**record, "metrics": [1, 2]}),)
        )
    connection.close()
    code, err = _report_cli(tmp_path, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metrics" in err and record["run_id"] in err


def test_total_wall_time_counts_overlapping_runs_once():
    from optforge.repro.report.render import _wall_span

    def run(end: str, wall: float) -> dict:
        return {"created": f"2026-12-06T{end}+00:00", "run_info": {"wall_time_s": wall}}

    # one pool (reproduce --all): three runs inside the same 10 minutes
    pooled = [run("08:10:00", 600.0), run("08:09:00", 300.0), run("08:05:00", 60.0)]
    assert _wall_span(pooled) == 600.0  # the sum would say 960 s
    # one after the other: the sum
    assert _wall_span([run("08:00:00", 60.0), run("09:00:00", 30.0)]) == 90.0
    # partly overlapping, and a record without a time stamp counted on its own
    assert _wall_span([run("08:01:00", 120.0), run("08:02:00", 120.0)]) == 180.0
    assert _wall_span([run("08:00:00", 10.0), {"run_info": {"wall_time_s": 5.0}}]) == 15.0
