"""Append-only results store: one JSON file per run plus an embedded SQLite index.

Layout under the store directory (default ``./optforge-runs``)::

    runs.sqlite                      table runs(run_id, name, scale, created, all_held, record)
    records/<name>/<created>-<run_id>.json
    scratch/<name>/<scale>/<fingerprint>/<trial>.json   finished trials of an unfinished run

Records are inserted, never updated or deleted (a trigger in the database refuses both).

**Writes are atomic.** :meth:`RunStore.append` first opens the index (a garbage ``runs.sqlite``
fails here, before anything is written), then writes the JSON to a temporary file in the target
directory, ``fsync``\\ s it, ``os.replace``\\ s it onto its final name and ``fsync``\\ s the
directory, and only then inserts the index row in one transaction. A failure at any point leaves
no half record: an exception removes what was written; a killed process leaves at worst a stray
temporary file (removed by the next writer) or a complete JSON file without its index row, which
the next writer (or :meth:`RunStore.check`) indexes. Readers only see indexed records.

**Scratch area.** While a run is in progress the runner keeps each finished trial under
``scratch/``, keyed by a fingerprint of everything the trial's result depends on (code, package
versions, device, threads, scale, config); a killed run resumed with the same fingerprint reuses
them, a run at another revision never sees them. The scratch of a reproduction is removed once its
record is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("optforge-runs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    scale TEXT NOT NULL,
    created TEXT NOT NULL,
    all_held INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name, seq);
CREATE TRIGGER IF NOT EXISTS runs_no_update BEFORE UPDATE ON runs
BEGIN SELECT RAISE(ABORT, 'optforge run records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'optforge run records are append-only'); END;
"""

_INSERT = (
    "INSERT OR IGNORE INTO runs (run_id, name, scale, created, all_held, record) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_TMP_MARK = ".tmp-"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,80}$")


class StoreError(Exception):
    """The store cannot be read or written; the message names the path and the cause."""


class RunStore:
    """The store at ``root``; created on first write."""

    def __init__(self, root: str | Path = DEFAULT_DIR) -> None:
        self.root = Path(root)

    @property
    def database(self) -> Path:
        return self.root / "runs.sqlite"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    # -- checks and connections -------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`StoreError` unless the store can take a record, before any work starts.

        ``root`` must be (or be creatable as) a writable directory, and an existing
        ``runs.sqlite`` must open as an optforge store. Complete records left without an index
        row by a killed writer are indexed here.
        """
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StoreError(f"cannot write to {self.root}: {err.strerror or err}") from err
        connection = self._connect()
        try:
            self._recover(connection)
        finally:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        """A read-write connection with the schema in place; :class:`StoreError` if unusable."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create {self.root}: {err.strerror or err}") from err
        try:
            connection = sqlite3.connect(self.database, timeout=60)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open {self.database}: {err}") from err
        try:
            connection.executescript(_SCHEMA)
            connection.execute("SELECT COUNT(*) FROM runs").fetchone()
        except sqlite3.Error as err:
            connection.close()
            raise StoreError(f"{self.database} is not a usable optforge store: {err}") from err
        return connection

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection (``None`` when there is no database yet)."""
        if not self.database.exists():
            yield None
            return
        try:
            connection = sqlite3.connect(f"{self.database.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open {self.database}: {err}") from err
        try:
            tables = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchall()
            yield connection if tables else None
        except sqlite3.Error as err:
            raise StoreError(f"{self.database} is not a readable optforge store: {err}") from err
        finally:
            connection.close()

    # -- records -----------------------------------------------------------------------------

    def path_of(self, record: dict[str, Any]) -> Path:
        """Where ``record``'s JSON file lives (or will live)."""
        stamp = record["created"].replace(":", "").replace("+0000", "Z")
        return self.root / "records" / _part(record["name"]) / f"{stamp}-{record['run_id']}.json"

    def append(self, record: dict[str, Any]) -> Path:
        """Write the record's JSON file atomically, then index it; returns the JSON file's path."""
        text = json.dumps(record, indent=1, allow_nan=False)  # fails before anything is written
        row = (
            record["run_id"],
            record["name"],
            record["scale"],
            record["created"],
            int(record["all_held"]),
            text,
        )
        path = self.path_of(record)
        connection = self._connect()  # a garbage database fails here, before the JSON
        try:
            self._recover(connection)
            atomic_write(path, text)
            try:
                with connection:  # one transaction
                    connection.execute(_INSERT, row)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        except sqlite3.Error as err:
            raise StoreError(f"cannot index the record in {self.database}: {err}") from err
        except OSError as err:
            raise StoreError(f"cannot write {path}: {err.strerror or err}") from err
        finally:
            connection.close()
        return path

    def _recover(self, connection: sqlite3.Connection) -> None:
        """Index complete JSON records that have no index row; remove dead writers' temp files."""
        records = self.root / "records"
        if not records.is_dir():
            return
        indexed = {row[0] for row in connection.execute("SELECT run_id FROM runs")}
        for path in sorted(records.glob("*/*")):
            if _TMP_MARK in path.name:
                _remove_if_orphan_temp(path)
                continue
            if path.suffix != ".json" or path.stem.rsplit("-", 1)[-1] in indexed:
                continue
            try:
                text = path.read_text()
                record = json.loads(text)
                row = (
                    record["run_id"],
                    record["name"],
                    record["scale"],
                    record["created"],
                    int(record["all_held"]),
                    text,
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a record this store wrote: leave it alone
            if self.path_of(record) != path:
                continue
            with connection:
                connection.execute(_INSERT, row)

    def _rows(self, query: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._reader() as connection:
            if connection is None:
                return []
            rows = connection.execute(query, args).fetchall()
        out = []
        for (text,) in rows:
            try:
                out.append(json.loads(text))
            except ValueError as err:
                raise StoreError(f"{self.database} holds a record that is not JSON: {err}") from err
        return out

    def latest(self) -> list[dict[str, Any]]:
        """The most recent record of every reproduction in the store, sorted by name."""
        return self._rows(
            "SELECT record FROM runs WHERE seq IN (SELECT MAX(seq) FROM runs GROUP BY name) "
            "ORDER BY name"
        )

    def latest_per_scale(self) -> list[dict[str, Any]]:
        """The most recent record of every (reproduction, scale), sorted by name then scale."""
        return self._rows(
            "SELECT record FROM runs WHERE seq IN "
            "(SELECT MAX(seq) FROM runs GROUP BY name, scale) ORDER BY name, scale"
        )

    def latest_record(self, name: str, scale: str) -> dict[str, Any] | None:
        """The most recent record of ``name`` at ``scale``, if any."""
        rows = self._rows(
            "SELECT record FROM runs WHERE name = ? AND scale = ? ORDER BY seq DESC LIMIT 1",
            (name, scale),
        )
        return rows[0] if rows else None

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every record of ``name``, oldest first."""
        return self._rows("SELECT record FROM runs WHERE name = ? ORDER BY seq", (name,))

    # -- scratch area for the finished trials of unfinished runs -------------------------------

    def _scratch_dir(self, name: str, scale: str, fingerprint: str) -> Path:
        return self.scratch / _part(name) / _part(scale) / _part(fingerprint)

    def save_trial(
        self, name: str, scale: str, fingerprint: str, trial_id: str, payload: dict[str, Any]
    ) -> Path:
        """Keep one finished trial (JSON, NaN/inf kept as numbers) until its record is written."""
        path = self._scratch_dir(name, scale, fingerprint) / f"{_part(trial_id)}.json"
        text = json.dumps({"fingerprint": fingerprint, "trial_id": trial_id, **payload})
        try:
            atomic_write(path, text)
        except OSError as err:
            raise StoreError(f"cannot write {path}: {err.strerror or err}") from err
        return path

    def load_trials(self, name: str, scale: str, fingerprint: str) -> dict[str, dict[str, Any]]:
        """The kept trials of ``fingerprint``, by trial id (anything unreadable is ignored)."""
        folder = self._scratch_dir(name, scale, fingerprint)
        out: dict[str, dict[str, Any]] = {}
        if not folder.is_dir():
            return out
        for path in sorted(folder.glob("*.json")):
            try:
                payload = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(payload, dict) and payload.get("fingerprint") == fingerprint:
                out[str(payload.get("trial_id"))] = payload
        return out

    def clear_trials(self, name: str, scale: str) -> None:
        """Drop the kept trials of ``name`` at ``scale`` (every fingerprint)."""
        shutil.rmtree(self.scratch / _part(name) / _part(scale), ignore_errors=True)
        for empty in (self.scratch / _part(name), self.scratch):
            with contextlib.suppress(OSError):
                empty.rmdir()  # only if empty


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` is either absent/old or complete.

    Temporary file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of the directory;
    on an exception the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_if_orphan_temp(path: Path) -> None:
    """Remove a temporary file whose writer process is gone."""
    try:
        pid = int(path.name.rsplit(_TMP_MARK, 1)[1])
    except (IndexError, ValueError):
        return
    if pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _part(text: str) -> str:
    """``text`` as one safe path component (a digest when it is not one already)."""
    if _SAFE_PART.match(text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:16]
