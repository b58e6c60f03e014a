"""The report in a real browser (headless Chromium at 1280 px): no sideways scrolling, every
image loaded, every section reachable from the summary.

``report_browser.py`` beside this file does the looking; run it by hand on any report, or with
``--render-hard DIR --report-module OLD/report.py`` to see an older report fail these checks.
"""

import pytest
from report_browser import browser, check_page, find_browser, hard_records

from optforge.repro.report import render_report

FOUND = find_browser()
needs_browser = pytest.mark.skipif(isinstance(FOUND, str), reason=f"no headless browser: {FOUND}")


@pytest.mark.slow
@needs_browser
def test_report_reads_at_1280_px(tmp_path):
    records = hard_records()
    paths = render_report(records, tmp_path)
    with browser() as driver:
        result = check_page(driver, paths["html"])
    assert result["problems"] == []
    # Not a vacuous pass: two papers, three runs, the overview; a plot per run plus the overview.
    assert result["sections"] == 6
    assert result["images"] == 4


@needs_browser
def test_the_check_catches_what_a_reader_would(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><body>"
        "<div id='summary'><a href='#one'>one</a><a href='#gone'>gone</a></div>"
        "<section id='one'><h2>linked</h2></section>"
        "<section id='two'><h2>not linked</h2></section>"
        "<h2>no id</h2>"
        "<table><tr>" + "<td>a-wide-cell-that-does-not-wrap</td>" * 60 + "</tr></table>"
        "<img alt='missing' src='does-not-exist.png'>"
        "</body></html>"
    )
    with browser() as driver:
        problems = check_page(driver, page)["problems"]
    text = "\n".join(problems)
    assert "horizontal overflow" in text
    assert "image not loaded: missing" in text
    assert "missing section: #gone" in text
    assert '"not linked" (#two is not linked)' in text
    assert '"no id" (no id)' in text
    assert '"linked"' not in text.replace('"not linked"', "")
