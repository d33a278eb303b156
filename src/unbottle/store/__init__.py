"""The SQLite experiment store: runs, their environment, raw measurements and results, never overwritten.

See ``unbottle.store.store`` for the API, ``unbottle.store.schema`` for the tables and how to add
new ones, and ``unbottle.store.codec`` for how NaN and infinity are written.
"""

from __future__ import annotations

from unbottle.store.recording import COMMAND_LINE, RunWriter
from unbottle.store.records import RunRecord, RunStatus
from unbottle.store.schema import RUN_STATUSES, schema_version
from unbottle.store.store import DB_FILENAME, Store, store_root

__all__ = [
    "COMMAND_LINE",
    "DB_FILENAME",
    "RUN_STATUSES",
    "RunRecord",
    "RunStatus",
    "RunWriter",
    "Store",
    "schema_version",
    "store_root",
]
