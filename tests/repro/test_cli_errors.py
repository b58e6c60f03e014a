"""The CLI's error handler and ``--out`` checks (issue #24, items 1 and 2): every error is one
line on stderr with exit status 2, ``--debug`` / ``OPTFORGE_DEBUG=1`` add the traceback, and a
bad ``--out`` is refused before the first trial (and before torch is imported)."""

import sqlite3
import subprocess
import sys

import pytest
import typer

from optforge import cli
from optforge.repro import Claim, Reproduction
from optforge.repro import registry as registry_module
from optforge.repro.store import RunStore


def _never_run(config, seed, device):
    raise AssertionError("a trial ran although --out was unusable")


@pytest.fixture
def toy(monkeypatch):
    reproduction = Reproduction(
        name="toy-errors",
        title="t",
        arxiv="0000.00000",
        spec="none.md",
        configs={"smoke": {}, "quick": {}, "full": {}},
        methods={"m": _never_run},
        claims=[Claim("c", "s", lambda r: 1.0, ">=", 0.0)],
    )
    monkeypatch.setitem(registry_module._REGISTRY, "toy-errors", reproduction)
    monkeypatch.delenv("OPTFORGE_DEBUG", raising=False)
    return reproduction


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _one_line(err):
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _garbage_store(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    (root / "runs.sqlite").write_bytes(b"garbage, not a database " * 20)
    return root


@pytest.mark.parametrize("case", ["file", "uncreatable", "garbage-db"])
def test_unusable_out_is_one_line_exit_2_before_any_trial(case, tmp_path, capsys, toy):
    if case == "file":
        out = tmp_path / "afile"
        out.write_text("not a directory")
    elif case == "uncreatable":
        out = "/proc/optforge-no-such-dir/runs"  # refused even to root
    else:
        out = _garbage_store(tmp_path)
    code, _, err = _cli(["reproduce", "toy-errors", "--scale", "smoke", "--out", str(out)], capsys)
    assert code == 2 and _one_line(err)
    assert "--out" in err and str(out) in err


def test_out_is_checked_before_torch_is_imported(tmp_path):
    """The fast path of a bad --out: no harness import, so it answers at once."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    code = (
        "import sys\n"
        "from optforge import cli\n"
        "try:\n"
        f"    cli.main(['reproduce', 'gns', '--out', {str(afile)!r}])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "is not a directory" in result.stderr


def test_corrupt_store_in_report_is_one_line(tmp_path, capsys):
    code, _, err = _cli(["report", "--out", str(_garbage_store(tmp_path))], capsys)
    assert code == 2 and _one_line(err) and "runs.sqlite" in err


def test_a_record_row_that_is_not_json_is_one_line(tmp_path, capsys):
    store = RunStore(tmp_path)
    store.check()
    with sqlite3.connect(store.database) as connection:
        connection.execute(
            "INSERT INTO runs (run_id, name, scale, created, all_held, record) "
            "VALUES ('x', 'toy', 'smoke', 'now', 1, '{\"truncated\": ')"
        )
    code, _, err = _cli(["report", "--out", str(tmp_path)], capsys)
    assert code == 2 and _one_line(err) and "not JSON" in err


@pytest.mark.parametrize("debug", ["flag", "env", None])
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
    debug, tmp_path, capsys, monkeypatch
):
    def boom(self, *args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(RunStore, "_rows", boom)  # every read of the store
    argv = ["report", "--out", str(tmp_path)]
    if debug == "flag":
        argv.append("--debug")
    elif debug == "env":
        monkeypatch.setenv("OPTFORGE_DEBUG", "1")
    else:
        monkeypatch.delenv("OPTFORGE_DEBUG", raising=False)
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("optforge: error: RuntimeError: something broke")
    if debug:
        assert "Traceback" in err and "boom" in err
    else:
        assert _one_line(err) and "--debug" in err


def test_abort_is_exit_130(monkeypatch, capsys):
    def abort(*args, **kwargs):
        raise typer.Abort()

    monkeypatch.setattr(cli.typer.main, "get_command", lambda app: _Command(abort))
    code, _, err = _cli(["list"], capsys)
    assert code == 130 and "aborted" in err and _one_line(err)


class _Command:
    def __init__(self, fn):
        self.fn = fn

    def main(self, **kwargs):
        return self.fn()
