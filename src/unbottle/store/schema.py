"""The store's tables, as an append-only list of migrations numbered by ``PRAGMA user_version``.

A database records how many migrations it has had in ``user_version``; opening it applies the rest,
each in its own ``BEGIN IMMEDIATE`` transaction, so two processes opening a fresh store at once cannot
both apply the same step, and a crash mid-migration leaves the previous version intact.

To add tables later (trials, artefacts), append a new tuple of SQL statements to ``MIGRATIONS``; never
edit or reorder a step that has shipped, since existing databases have already applied it.

Runs are append-only: triggers reject deleting runs or measurements, editing a measurement, and
updating a run that is no longer ``running`` (finishing a run is the one update allowed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from unbottle.core.errors import StoreError

RUN_STATUSES = ("running", "complete", "failed", "interrupted")
# what a complete run that had a goal says of it: an optimize run whose guard no candidate kept is
# complete (it ran to the end) but its goal was missed, and is listed as ``goal-missed``
RUN_OUTCOMES = ("goal-met", "goal-missed")

_V1 = (
    f"""
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN {RUN_STATUSES!r}),
        created_at TEXT NOT NULL,
        finished_at TEXT,
        config_json TEXT NOT NULL,
        manifest_json TEXT NOT NULL,
        result_json TEXT,
        error TEXT,
        argv_json TEXT,
        pid INTEGER,
        host TEXT
    )
    """,
    "CREATE INDEX runs_kind ON runs (kind, id)",
    """
    CREATE TABLE measurements (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        scenario TEXT NOT NULL,
        unit TEXT NOT NULL,
        higher_is_better INTEGER NOT NULL,
        params_json TEXT NOT NULL,
        samples_json TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX measurements_run ON measurements (run_id, id)",
    """
    CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs
    BEGIN SELECT RAISE(ABORT, 'runs are append-only: a run cannot be deleted'); END
    """,
    """
    CREATE TRIGGER runs_finish_once BEFORE UPDATE ON runs WHEN OLD.status != 'running'
    BEGIN SELECT RAISE(ABORT, 'runs are append-only: a finished run cannot be changed'); END
    """,
    """
    CREATE TRIGGER measurements_no_delete BEFORE DELETE ON measurements
    BEGIN SELECT RAISE(ABORT, 'runs are append-only: a measurement cannot be deleted'); END
    """,
    """
    CREATE TRIGGER measurements_no_update BEFORE UPDATE ON measurements
    BEGIN SELECT RAISE(ABORT, 'runs are append-only: a measurement cannot be changed'); END
    """,
)

# Version 2: search trials, one row per (search, trial) so an interrupted search resumes without
# repeating finished trials. Append-only like runs.
_V2 = (
    """
    CREATE TABLE trials (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        search_key TEXT NOT NULL,
        trial_key TEXT NOT NULL,
        data_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (search_key, trial_key)
    )
    """,
    """
    CREATE TRIGGER trials_no_change BEFORE UPDATE ON trials
    BEGIN SELECT RAISE(ABORT, 'trials are append-only: a recorded trial cannot be changed'); END
    """,
    """
    CREATE TRIGGER trials_no_delete BEFORE DELETE ON trials
    BEGIN SELECT RAISE(ABORT, 'trials are append-only: a recorded trial cannot be deleted'); END
    """,
)

# Version 3: a complete run's outcome against its goal (NULL for runs without one).
_V3 = (f"ALTER TABLE runs ADD COLUMN outcome TEXT CHECK (outcome IS NULL OR outcome IN {RUN_OUTCOMES!r})",)

# MIGRATIONS[i] takes a database from version i to i + 1. Append only.
MIGRATIONS: list[Sequence[str]] = [_V1, _V2, _V3]


def schema_version() -> int:
    """The version this unbottle writes: the number of migrations it knows."""
    return len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database up to ``schema_version()``, one committed step at a time.

    Args:
        conn: an autocommit connection (``isolation_level=None``) to the database.
        path: the database file, for error messages.

    Raises:
        StoreError: the database was written by a newer unbottle with a schema this one cannot read.
    """
    target = schema_version()
    while (current := _user_version(conn)) < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = _user_version(conn)
            if current < target:
                for statement in MIGRATIONS[current]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    if current > target:
        raise StoreError(
            f"the store {path} has schema version {current}, but this unbottle reads up to version "
            f"{target}; upgrade unbottle, or set UNBOTTLE_HOME to another folder for a separate store"
        )


def _user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]
