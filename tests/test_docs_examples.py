"""Every ```python block in README.md and docs/**/*.md runs, as a reader would run it.

The blocks of one Markdown file run in order in one shared namespace (a later block may continue
an earlier one; the page says so), one test per file, in a fresh temporary working directory,
with one torch thread, fixed seeds and matplotlib's Agg backend. Tracebacks point at the
Markdown file's own line numbers.

A block that truly cannot run here is preceded, on the line just before its fence, by::

    <!-- docs-test: skip — <reason> -->

(the reason names where the suite executes the same code). A marker with no reason, or one not
followed by a python fence, is a collection error, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import random
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_INFO = {"python", "py", "python3"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test\s*:")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s+[—–-]+\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None  # the skip reason, or None


class DocsExampleError(ValueError):
    """A Markdown file the collector cannot read unambiguously."""


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def python_blocks(text: str, path: Path) -> list[Block]:
    """The python blocks of ``text`` in order, with their skip markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line index, reason) of a skip marker
    i = 0
    while i < len(lines):
        line = lines[i]
        if _MARKER.match(line):
            skip = _SKIP.match(line)
            if skip is None:
                raise DocsExampleError(
                    f"{path}:{i + 1}: a docs-test marker must read "
                    "'<!-- docs-test: skip — <reason> -->'"
                )
            pending = (i, skip["reason"])
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if pending is not None:
                raise DocsExampleError(
                    f"{path}:{pending[0] + 1}: a skip marker must be the line just before a "
                    "```python fence"
                )
            i += 1
            continue
        indent, mark = fence["indent"], fence["fence"]
        words = fence["info"].strip().lstrip("{").split()
        lang = words[0].lstrip(".").rstrip("}").lower() if words else ""
        end = i + 1
        closing = re.compile(rf"^[ \t]*{re.escape(mark[0])}{{{len(mark)},}}[ \t]*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if end == len(lines):
            raise DocsExampleError(f"{path}:{i + 1}: code fence never closed")
        if lang in PYTHON_INFO:
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            code = textwrap.dedent("\n".join(body)) + "\n"
            blocks.append(Block(path, i + 2, code, pending[1] if pending else None))
        elif pending is not None:
            raise DocsExampleError(
                f"{path}:{pending[0] + 1}: a skip marker must be followed by a ```python fence"
            )
        pending = None
        i = end + 1
    if pending is not None:
        raise DocsExampleError(f"{path}:{pending[0] + 1}: a skip marker at the end of the file")
    return blocks


def run_blocks(blocks: list[Block], rel: str) -> int:
    """Run ``blocks`` in order in one namespace; returns how many ran (not skipped)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
    except ImportError:  # pragma: no cover - matplotlib comes with the repro extra
        pass
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": rel}
    ran = 0
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        for block in blocks:
            if block.skip is not None:
                continue
            # Pad so tracebacks carry the Markdown file's own line numbers.
            source = "\n" * (block.line - 1) + block.code
            exec(compile(source, rel, "exec"), namespace)  # the docs' own code
            ran += 1
    finally:  # a page may change torch's global defaults; later tests must not see it
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    return ran


_FILES = [(p, python_blocks(p.read_text(encoding="utf-8"), p)) for p in doc_files()]
_WITH_BLOCKS = [(p, b) for p, b in _FILES if b]


@pytest.fixture
def registries_restored():
    """A block may register a step case, a bench section or a reproduction, as the docs show
    a user doing; the suite's own registry tests must not see it afterwards."""
    from optforge.repro import registry as repro_registry
    from optforge.repro.bench import registry as bench_registry
    from optforge.repro.bench import step_time

    step_time.step_cases()  # discover first, so the snapshot holds every built-in entry
    bench_registry.all_bench_entries()
    repro_registry.all_reproductions()
    saved = [
        (registry, dict(registry))
        for registry in (step_time._CASES, bench_registry._REGISTRY, repro_registry._REGISTRY)
    ]
    yield
    for registry, copy in saved:
        registry.clear()
        registry.update(copy)


@pytest.mark.parametrize(
    "path,blocks", _WITH_BLOCKS, ids=[p.relative_to(ROOT).as_posix() for p, _ in _WITH_BLOCKS]
)
def test_docs_examples_run(path, blocks, tmp_path, monkeypatch, registries_restored):
    monkeypatch.chdir(tmp_path)
    rel = path.relative_to(ROOT).as_posix()
    if run_blocks(blocks, rel) == 0:
        pytest.skip(f"every python block of {rel} is marked docs-test: skip")


# The collector itself: what it accepts, what it refuses.

PAGE = """# Page

```python
x = 1
```

Continues the block above:

```python
y = x + 1
```

<!-- docs-test: skip — runs 8 GPUs; tests/distributed/test_ddp.py runs the same code -->
```python
raise RuntimeError("never runs")
```

```bash
echo not python
```

- in a list:

    ```python
    z = y * 2
    ```
"""


def test_collector_finds_blocks_lines_and_skips(tmp_path):
    blocks = python_blocks(PAGE, Path("page.md"))
    assert [b.line for b in blocks] == [4, 10, 15, 25]
    assert [b.skip for b in blocks] == [
        None,
        None,
        "runs 8 GPUs; tests/distributed/test_ddp.py runs the same code",
        None,
    ]
    assert blocks[3].code == "z = y * 2\n"
    ns: dict[str, object] = {}
    for b in blocks:
        if b.skip is None:
            exec(compile(b.code, "page.md", "exec"), ns)
    assert ns["z"] == 4


def test_runner_shares_one_namespace_and_reports_markdown_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE, Path("page.md"))
    assert run_blocks(blocks, "page.md") == 3
    broken = PAGE.replace("y = x + 1", "y = undefined_name")
    with pytest.raises(NameError) as info:
        run_blocks(python_blocks(broken, Path("page.md")), "page.md")
    last = info.traceback[-1]
    assert str(last.path).endswith("page.md") and last.lineno + 1 == 10


@pytest.mark.parametrize(
    "text,message",
    [
        ("<!-- docs-test: skip -->\n```python\nx = 1\n```\n", "must read"),
        ("<!-- docs-test: skip — why -->\n\n```python\nx = 1\n```\n", "just before"),
        ("<!-- docs-test: skip — why -->\n```bash\nls\n```\n", "followed by a ```python"),
        ("<!-- docs-test: skipp — why -->\n```python\nx = 1\n```\n", "must read"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_collector_refuses_ambiguous_markers(text, message):
    with pytest.raises(DocsExampleError, match=re.escape(message)):
        python_blocks(text, Path("bad.md"))
