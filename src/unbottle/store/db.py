"""Opening the SQLite file safely, and turning SQLite's errors into one clear ``StoreError`` line.

The connection is in autocommit mode, so every single statement is its own committed transaction and
multi-statement writes say ``BEGIN IMMEDIATE`` explicitly. The journal is WAL with
``synchronous=NORMAL``: a committed write survives the writing process being killed at any instant
(even ``kill -9``); only a power cut or OS crash may lose the last few commits, never corrupt the file.
WAL also lets ``unbottle runs list`` read while a benchmark writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from unbottle.core.errors import StoreError
from unbottle.store.schema import migrate

BUSY_TIMEOUT_S = 5.0


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the store database at ``path`` and bring its schema up to date.

    Args:
        path: the database file; its folder is created if missing.

    Returns:
        An autocommit connection with WAL, ``synchronous=NORMAL``, a 5 s busy timeout and foreign keys.

    Raises:
        StoreError: the folder cannot be created or written, the file is not a healthy SQLite
            database, or it was written by a newer unbottle.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the store folder {path.parent} ({exc}); set UNBOTTLE_HOME to a writable folder"
        ) from exc
    conn = None
    with translate_errors(path, "open"):
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode stayed {mode!r} instead of 'wal'")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, path)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the enclosed statements as one write transaction: all committed, or none on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def translate_errors(path: Path, action: str) -> Iterator[None]:
    """Re-raise any ``sqlite3.Error`` inside the block as a ``StoreError`` that says how to fix it.

    Args:
        path: the database file, named in the message.
        action: what was being done, e.g. ``"read run 3"``.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(_explain(path, action, exc)) from exc


def _explain(path: Path, action: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    lowered = text.lower()
    where = f"could not {action} the store {path} ({text})"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return (
            f"{where}: the file is damaged or is not an unbottle store; move it aside "
            f"(e.g. `mv {path} {path}.bad`) to start a fresh store, or set UNBOTTLE_HOME to another folder"
        )
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return f"{where}: the file or its folder is not writable; set UNBOTTLE_HOME to a writable folder"
    if "locked" in lowered or "busy" in lowered:
        return (
            f"{where}: another process held it locked for over {BUSY_TIMEOUT_S:g} s; wait for it to "
            "finish, or set UNBOTTLE_HOME to another folder"
        )
    if "append-only" in lowered:
        return f"{where}: every run is kept as recorded; start a new run instead"
    return where
