"""Store writes are atomic: a failure or a kill at any point of ``RunStore.append`` leaves the
store readable and holding exactly the complete records written before (issue #24, item 3)."""

import json
import os
import sqlite3

import pytest

from optforge.repro import store as store_module
from optforge.repro.store import RunStore, StoreError


def _record(run_id, name="toy", created="2026-01-01T00:00:00+00:00"):
    return {
        "schema": 1,
        "run_id": run_id,
        "created": created,
        "name": name,
        "scale": "smoke",
        "seeds": [100],
        "all_held": True,
        "metrics": {"m": {"100": {"x": 1.0, "curve": list(range(200))}}},
    }


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in (root / "records").rglob("*"))


def _assert_complete(store, expected_ids):
    """Readable; the index holds exactly ``expected_ids``; every JSON file is a whole record."""
    assert [r["run_id"] for r in store.history("toy")] == expected_ids
    for path in (store.root / "records").rglob("*.json"):
        json.loads(path.read_text())  # never a truncated file under a final name


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs")
    s.append(_record("first0000001"))
    return s


@pytest.mark.parametrize("point", ["write", "fsync", "replace", "index"])
def test_an_exception_at_each_point_leaves_no_half_record(store, monkeypatch, point):
    before = _files(store.root)

    def boom(*args, **kwargs):
        raise OSError(28, "injected failure")

    if point == "write":
        real_open = open

        class HalfFile:
            def __init__(self, *args, **kwargs):
                self.handle = real_open(*args, **kwargs)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, text):
                self.handle.write(text[: len(text) // 2])
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(store_module, "open", HalfFile, raising=False)
    elif point == "fsync":
        monkeypatch.setattr(store_module.os, "fsync", boom)
    elif point == "replace":
        monkeypatch.setattr(store_module.os, "replace", boom)
    else:
        monkeypatch.setattr(store_module, "_INSERT", "INSERT INTO no_such_table VALUES (?)")
    with pytest.raises(StoreError):
        store.append(_record("second000002"))
    monkeypatch.undo()
    assert _files(store.root) == before  # no temp file, no JSON without its index row
    _assert_complete(store, ["first0000001"])


def test_a_garbage_database_fails_before_anything_is_written(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    store.database.write_bytes(b"this is not an SQLite database" * 10)
    with pytest.raises(StoreError, match=r"runs\.sqlite"):
        store.append(_record("second000002"))
    assert not (store.root / "records").exists()
    with pytest.raises(StoreError, match=r"runs\.sqlite"):
        store.check()
    with pytest.raises(StoreError, match=r"runs\.sqlite"):
        store.latest()


def _killed_child(store, point):
    """Fork a child that appends a record and is killed (``os._exit``) at ``point``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            die = lambda *a, **k: os._exit(9)  # noqa: E731
            if point == "mid-write":
                real_open = open

                class Dying:
                    def __init__(self, *args, **kwargs):
                        self.handle = real_open(*args, **kwargs)

                    def __enter__(self):
                        return self

                    def __exit__(self, *exc):
                        pass

                    def write(self, text):
                        self.handle.write(text[: len(text) // 3])
                        self.handle.flush()
                        os._exit(9)

                store_module.open = Dying
            elif point == "before-fsync":
                store_module.os.fsync = die
            elif point == "before-replace":
                store_module.os.replace = die
            elif point == "before-index":
                store_module._fsync_dir = die
            store.append(_record("second000002"))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("point", ["mid-write", "before-fsync", "before-replace", "before-index"])
def test_a_killed_writer_leaves_the_store_complete_up_to_the_last_record(store, point):
    assert _killed_child(store, point) == 9
    # Readers see the last finished record and no half record, whatever the kill point.
    _assert_complete(store, ["first0000001"])
    # The next writer tidies up: a dead writer's temp file goes, a complete orphan is indexed.
    store.check()
    names = _files(store.root)
    assert not [n for n in names if ".tmp-" in n]
    expected = ["first0000001"] + (["second000002"] if point == "before-index" else [])
    _assert_complete(store, expected)
    store.append(_record("third0000003", created="2026-01-02T00:00:00+00:00"))
    _assert_complete(store, [*expected, "third0000003"])


def test_records_stay_append_only_and_names_cannot_leave_the_store(tmp_path):
    store = RunStore(tmp_path / "runs")
    path = store.append(_record("escape000001", name="../../escaped"))
    assert store.root.resolve() in path.resolve().parents
    with sqlite3.connect(store.database) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("DELETE FROM runs")


def test_scratch_trials_round_trip_non_finite_numbers_and_are_cleared(tmp_path):
    store = RunStore(tmp_path)
    payload = {"metrics": {"a": {"x": float("nan"), "y": float("inf"), "z": 0.1 + 0.2}}}
    store.save_trial("toy", "quick", "fp1", "seed100-abc", payload)
    kept = store.load_trials("toy", "quick", "fp1")
    x = kept["seed100-abc"]["metrics"]["a"]
    assert x["x"] != x["x"] and x["y"] == float("inf") and x["z"] == 0.1 + 0.2
    assert store.load_trials("toy", "quick", "fp2") == {}  # another fingerprint sees nothing
    store.clear_trials("toy", "quick")
    assert store.load_trials("toy", "quick", "fp1") == {}
