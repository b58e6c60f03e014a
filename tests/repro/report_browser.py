"""Look at a rendered ``report.html`` in headless Chromium, as a reader would.

Used by ``test_report_browser.py`` and runnable by hand (it also takes the docs screenshot)::

    python tests/repro/report_browser.py optforge-runs/report.html
    python tests/repro/report_browser.py optforge-runs/report.html --screenshot docs/img/report.png

Checks, at a 1280 px wide window:

* the page does not scroll sideways (``scrollWidth`` of the document ≤ the window's width);
  wide tables must scroll inside their own box;
* every image loaded (``complete`` and a natural width > 0);
* every section is reachable from the summary: the page has a ``#summary`` element, every
  ``h2``/``h3`` outside it sits in an element with an ``id``, and the summary links to that id.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and ``selenium`` (the ``dev`` extra). Exit status 0 when the page passes,
1 when it does not, 2 when no browser is available.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WIDTH = 1280

_CHECK_JS = """
const doc = document.documentElement;
const problems = [];
const width = window.innerWidth;
if (doc.scrollWidth > width) {
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 1 && wide.length < 5) {
      wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ends at ' +
                Math.round(r.right) + ' px');
    }
  }
  problems.push('horizontal overflow: the page is ' + doc.scrollWidth + ' px wide at a ' +
                width + ' px window (' + wide.join('; ') + ')');
}
const images = Array.from(document.images);
for (const img of images) {
  if (!(img.complete && img.naturalWidth > 0)) {
    problems.push('image not loaded: ' + (img.alt || img.src.slice(0, 60)));
  }
}
const summary = document.getElementById('summary');
const linked = new Set();
if (!summary) {
  problems.push('no summary element (id="summary") to reach the sections from');
} else {
  for (const a of summary.querySelectorAll('a[href^="#"]')) {
    const id = decodeURIComponent(a.getAttribute('href').slice(1));
    if (!document.getElementById(id)) {
      problems.push('summary link to a missing section: #' + id);
    } else {
      linked.add(id);
    }
  }
}
let sections = 0;
for (const h of document.querySelectorAll('h2, h3')) {
  if (summary && summary.contains(h)) continue;
  sections += 1;
  let el = h;
  while (el && el !== document.body && !el.id) el = el.parentElement;
  const id = el && el !== document.body ? el.id : null;
  if (!id || !linked.has(id)) {
    problems.push('section not reachable from the summary: "' + h.textContent.trim().slice(0, 60) +
                  '"' + (id ? ' (#' + id + ' is not linked)' : ' (no id)'));
  }
}
return {problems: problems, images: images.length, sections: sections,
        width: doc.scrollWidth, height: doc.scrollHeight};
"""


def find_browser() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or a sentence saying what is missing."""
    chromium = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'optforge[dev]')"
    if chromium is None or driver is None:
        return (
            "headless Chromium is not installed (apt-get install -y chromium chromium-driver; "
            f"found chromium={chromium}, chromedriver={driver})"
        )
    return chromium, driver


@contextmanager
def browser(width: int = WIDTH, height: int = 900) -> Iterator[Any]:
    """A headless Chromium window of ``width`` × ``height`` CSS pixels (selenium driver)."""
    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, driver_path = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def check_page(driver: Any, html: Path) -> dict[str, Any]:
    """Load ``html`` and return ``{problems, images, sections, width, height}``."""
    driver.get(Path(html).resolve().as_uri())
    return driver.execute_script(_CHECK_JS)


def screenshot(driver: Any, out: Path, height: int | None = None) -> Path:
    """PNG of the loaded page, ``WIDTH`` px wide, the top ``height`` px (whole page if None)."""
    full = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": WIDTH,
                "height": min(full, height or full),
                "scale": 1,
            },
        },
    )
    import base64

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def hard_records() -> list[dict[str, Any]]:
    """Records that stress the page: a 12-method × 30-metric table, four curve panels, two
    scales of one reproduction, long names and an unbreakable 200-character token."""
    import numpy as np

    from optforge.repro.registry import Claim
    from optforge.repro.runner import build_record

    def record(name: str, scale: str, n_methods: int, n_metrics: int, seeds: int) -> Any:
        metrics: dict[str, dict[int, dict[str, Any]]] = {}
        for m in range(n_methods):
            metrics[f"method-{m}/with-a-long-arm-name"] = {}
            for s in range(100, 100 + seeds):
                rng = np.random.default_rng(1000 * m + s)
                values: dict[str, Any] = {
                    f"a_rather_long_metric_name_{k}": float(rng.normal(1 + k, 0.1))
                    for k in range(n_metrics)
                }
                steps = list(range(40))
                values["step"] = steps
                for curve in ("loss", "accuracy", "gap", "norm"):
                    values[curve] = [
                        float(np.exp(-t / (5 + m)) + 0.05 * rng.random()) for t in steps
                    ]
                metrics[f"method-{m}/with-a-long-arm-name"][s] = values
        first = next(iter(metrics))
        claims = [
            Claim(
                f"claim-{i}-with-a-fairly-long-hyphenated-name",
                "The paper says something long enough to wrap over several lines of the table "
                "when it is shown next to the measured quantity and the interval.",
                lambda r, i=i: r.mean(first, f"a_rather_long_metric_name_{i}"),
                ">=",
                threshold,
                quantity=f"mean over seeds of metric {i} of {first} (units)",
            )
            for i, threshold in enumerate([0.5, 1.0, 5.0])
        ]
        return build_record(
            name=name,
            title="A paper whose title carries an unbreakable token " + "x" * 200,
            arxiv="0000.00000",
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
            wall_time_s=12.5,
            peak_memory_mb=0.0,
            trials=[],
            plot={"x": "step", "y": ["loss", "accuracy", "gap", "norm"], "logy": False},
        )

    return [
        record("wide", "quick", 12, 30, 3),
        record("wide", "smoke", 3, 4, 1),
        record("narrow", "quick", 2, 3, 5),
    ]


def render_hard(out: Path, report_module: Path | None = None) -> Path:
    """Render :func:`hard_records` into ``out`` with optforge's report, or with the
    ``render_report`` of the module file ``report_module`` (e.g. an older report.py)."""
    if report_module is None:
        from optforge.repro.report import render_report
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("other_report", report_module)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        render_report = module.render_report
    return Path(render_report(hard_records(), out)["html"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, nargs="?", help="the report.html to check")
    parser.add_argument("--screenshot", type=Path, help="also write a 1280 px PNG here")
    parser.add_argument("--height", type=int, default=2400, help="screenshot height in px")
    parser.add_argument(
        "--render-hard", type=Path, metavar="DIR", help="render the hard test records into DIR"
    )
    parser.add_argument(
        "--report-module", type=Path, help="with --render-hard: a report.py file to render with"
    )
    args = parser.parse_args(argv)
    if args.render_hard:
        args.html = render_hard(args.render_hard, args.report_module)
    if args.html is None:
        parser.error("give a report.html or --render-hard DIR")
    found = find_browser()
    if isinstance(found, str):
        print(f"report_browser: {found}", file=sys.stderr)
        return 2
    with browser() as driver:
        result = check_page(driver, args.html)
        if args.screenshot:
            screenshot(driver, args.screenshot, args.height)
    print(
        f"{args.html}: {result['sections']} sections, {result['images']} images, "
        f"{result['width']} × {result['height']} px at a {WIDTH} px window"
    )
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
