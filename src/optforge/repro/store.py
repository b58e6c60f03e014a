"""Append-only results store: one JSON file per run plus an embedded SQLite index.

Layout under the store directory (default ``./optforge-runs``)::

    runs.sqlite                      table runs(run_id, name, scale, created, all_held, record)
    records/<name>/<created>-<run_id>.json

Records are inserted, never updated or deleted (a trigger in the database refuses both).
"""

from __future__ import annotations

import json
import sqlite3
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


class RunStore:
    """The store at ``root``; created on first use."""

    def __init__(self, root: str | Path = DEFAULT_DIR) -> None:
        self.root = Path(root)

    @property
    def database(self) -> Path:
        return self.root / "runs.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.database)
        connection.executescript(_SCHEMA)
        return connection

    def append(self, record: dict[str, Any]) -> Path:
        """Write the record's JSON file and index it; returns the JSON file's path."""
        stamp = record["created"].replace(":", "").replace("+0000", "Z")
        path = self.root / "records" / record["name"] / f"{stamp}-{record['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1, allow_nan=False)
        path.write_text(text)
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO runs (run_id, name, scale, created, all_held, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record["run_id"],
                    record["name"],
                    record["scale"],
                    record["created"],
                    int(record["all_held"]),
                    text,
                ),
            )
        connection.close()
        return path

    def latest(self) -> list[dict[str, Any]]:
        """The most recent record of every reproduction in the store, sorted by name."""
        if not self.database.exists():
            return []
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT record FROM runs WHERE seq IN (SELECT MAX(seq) FROM runs GROUP BY name) "
                "ORDER BY name"
            ).fetchall()
        connection.close()
        return [json.loads(row[0]) for row in rows]

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every record of ``name``, oldest first."""
        if not self.database.exists():
            return []
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT record FROM runs WHERE name = ? ORDER BY seq", (name,)
            ).fetchall()
        connection.close()
        return [json.loads(row[0]) for row in rows]
