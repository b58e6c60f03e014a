"""Project-level checks: lint, format, layering contracts, docs build, docs coverage."""

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optforge
from optforge.repro import all_reproductions

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUBPACKAGES = [
    "optim", "nn", "losses", "data", "online", "rl", "unlearning", "dfo", "matrix",
    "diffusion", "problems", "testing", "repro",
]  # fmt: skip


def _run(*cmd):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_version():
    assert optforge.__version__.count(".") == 2


def test_ruff_lint_and_format():
    lint = _run(str(BIN / "ruff"), "check", "src", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(str(BIN / "ruff"), "format", "--check", "src", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_import_layering_contracts():
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_build_strict(tmp_path):
    result = _run(str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", [r.name for r in all_reproductions()])
def test_every_reproduction_has_a_docs_page(name):
    assert (ROOT / "docs" / "methods" / f"{name}.md").exists()


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_every_public_symbol_has_a_docstring(subpackage):
    module = importlib.import_module(f"optforge.{subpackage}")
    missing = [
        name
        for name in getattr(module, "__all__", [])
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert not missing, f"optforge.{subpackage}: public symbols without a docstring: {missing}"
