"""The experiment store: every run's config, environment, raw measurements and result, in one SQLite file.

A benchmark or search writes each measurement as soon as it exists, each in its own committed
transaction, so a run killed at any moment keeps everything it had measured, and a later command can
read it back by id or as ``"last"``. Runs are append-only: a run is finished once and never rewritten.

Reading never creates anything: ``unbottle runs list`` in a folder without a store simply finds no
runs. The folder and database are created by the first write.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

from unbottle.core.errors import StoreError
from unbottle.core.measurement import Measurement
from unbottle.store import codec, db
from unbottle.store.recording import RunWriter, recording
from unbottle.store.records import RunRecord, RunStatus, now_iso
from unbottle.store.schema import RUN_OUTCOMES, RUN_STATUSES

DB_FILENAME = "unbottle.db"
LAST = "last"
_FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")


# every kind of run a verb records (``reporting.run_kinds`` registers how each one is shown, "peaks"
# aside: the host's measured peaks, kept for later profiles)
RUN_KIND_NAMES = (
    "ab",
    "apply",
    "bench",
    "compare",
    "distill",
    "eval",
    "optimize",
    "peaks",
    "profile",
    "train",
)


def store_root() -> Path:
    """The store folder: ``$UNBOTTLE_HOME`` if set, else ``.unbottle`` in the current directory."""
    home = os.environ.get("UNBOTTLE_HOME")
    return Path(home).expanduser() if home else Path.cwd() / ".unbottle"


class Store:
    """Runs and their raw measurements, in ``<root>/unbottle.db``.

    Use as a context manager, or call ``close()``::

        with Store() as store, store.recording("bench", "gpt2", config={...}) as run:
            run.add(measurement)
            run.complete(result={...})

    (``start_run``, ``add_measurement`` and ``finish_run`` are the same steps one at a time.)

    Args:
        root: the store folder; ``store_root()`` when ``None``.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else store_root()
        self.path = self.root / DB_FILENAME
        self._conn: sqlite3.Connection | None = None

    def start_run(
        self,
        kind: str,
        model: str,
        config: dict[str, Any],
        manifest: dict[str, Any],
        argv: list[str] | None = None,
    ) -> int:
        """Record a new run as ``running`` by this process on this host.

        Args:
            kind: what makes the run, e.g. ``"bench"``.
            model: the model spec.
            config: the run's configuration (JSON-able; see ``unbottle.store.codec`` for NaN/inf).
            manifest: the environment manifest.
            argv: the command line, if started from one.

        Returns:
            The new run's id.

        Raises:
            StoreError: the data is not JSON-able or the store cannot be written.
        """
        row = (
            kind,
            model,
            now_iso(),
            codec.dumps(config, "the run config"),
            codec.dumps(manifest, "the run manifest"),
            None if argv is None else codec.dumps(list(argv), "the run argv"),
            os.getpid(),
            socket.gethostname(),
        )
        conn = self._connection(create=True)
        with db.translate_errors(self.path, "start a run in"):
            cursor = conn.execute(
                "INSERT INTO runs (kind, model, status, created_at, config_json, manifest_json,"
                " argv_json, pid, host) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                row,
            )
        return cursor.lastrowid

    def add_measurement(self, run_id: int, m: Measurement) -> int:
        """Append one measurement, with every raw sample, to a running run; committed on return.

        Args:
            run_id: a run started with ``start_run`` and not yet finished.
            m: the measurement.

        Returns:
            The measurement's id.

        Raises:
            StoreError: the run does not exist or is finished, or the store cannot be written.
        """
        row = (
            m.name,
            m.scenario,
            m.unit,
            int(bool(m.higher_is_better)),
            codec.dumps(m.params, f"the params of measurement {m.name!r}"),
            codec.dumps(list(m.samples), f"the samples of measurement {m.name!r}"),
            now_iso(),
            run_id,
        )
        conn = self._connection(create=True)
        with db.translate_errors(self.path, f"add a measurement to run {run_id} in"):
            # One statement, so the "is it still running" check and the insert are atomic.
            cursor = conn.execute(
                "INSERT INTO measurements (run_id, name, scenario, unit, higher_is_better, params_json,"
                " samples_json, created_at) SELECT id, ?, ?, ?, ?, ?, ?, ? FROM runs"
                " WHERE id = ? AND status = 'running'",
                row,
            )
        if cursor.rowcount != 1:
            run = self.get_run(run_id)
            raise StoreError(
                f"run {run_id} is {run.status}; measurements can only be added to a running run "
                "(runs are append-only: start a new run instead)"
            )
        return cursor.lastrowid

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Mark a running run finished; a run can be finished only once.

        Args:
            run_id: the run to finish.
            status: ``"complete"``, ``"failed"`` or ``"interrupted"``.
            result: the run's summary (JSON-able), if any.
            error: what went wrong, for a failed or interrupted run.
            outcome: for a complete run that had a goal, ``"goal-met"`` or ``"goal-missed"``.

        Raises:
            StoreError: the status is not a final one, the run does not exist or is already finished,
                or the store cannot be written.
        """
        if status not in _FINAL_STATUSES:
            raise StoreError(f"cannot finish run {run_id} as {status!r}; allowed: {list(_FINAL_STATUSES)}")
        if outcome is not None and (outcome not in RUN_OUTCOMES or status != "complete"):
            raise StoreError(
                f"cannot finish run {run_id} as {status!r} with outcome {outcome!r}; an outcome is one of "
                f"{list(RUN_OUTCOMES)}, for a complete run"
            )
        result_json = None if result is None else codec.dumps(result, "the run result")
        values = (status, now_iso(), result_json, error, outcome, run_id)
        conn = self._connection(create=True)
        with db.translate_errors(self.path, f"finish run {run_id} in"):
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, result_json = ?, error = ?, outcome = ?"
                " WHERE id = ? AND status = 'running'",
                values,
            )
        if cursor.rowcount != 1:
            run = self.get_run(run_id)
            raise StoreError(
                f"run {run_id} is already {run.status} (finished at {run.finished_at}); a run is "
                "finished once and never rewritten"
            )

    def recording(
        self, kind: str, model: str, config: dict[str, Any], manifest: dict[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[RunWriter]:
        """A run recorded for the length of a ``with`` block (see ``unbottle.store.recording``)."""
        return recording(self, kind, model, config, manifest)

    def get_run(self, ref: str | int, kind: str | None = None) -> RunRecord:
        """Look up one run.

        Args:
            ref: a run id, as an int or numeric string, or ``"last"`` for the most recent run.
            kind: if given, the run must be of this kind (``"last"`` means the latest of this kind).

        Returns:
            The run.

        Raises:
            StoreError: ``ref`` is not an id or ``"last"``, or no such run exists; the message names
                the latest run and how to list them.
        """
        run_id = _parse_ref(ref)
        where, params = ("", ()) if kind is None else ("WHERE kind = ?", (kind,))
        if run_id is None:
            rows = self._query(f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT 1", params, "read")
        else:
            rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,), f"read run {run_id} from")
        if not rows:
            raise StoreError(self._not_found(run_id, kind))
        if kind is not None and rows[0]["kind"] != kind:
            raise StoreError(f"run {run_id} in {self.path} is a {rows[0]['kind']!r} run, not {kind!r}")
        return RunRecord.from_row(rows[0])

    def list_runs(self, limit: int | None = 20, kind: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first.

        Args:
            limit: at most this many runs; ``None`` for all.
            kind: only runs of this kind, e.g. ``"bench"``.

        Returns:
            The runs, newest first; empty when the store does not exist yet.
        """
        if limit is not None and limit < 0:
            raise StoreError(f"cannot list {limit} runs; give a limit of 0 or more, or None for all")
        if kind is not None and kind not in RUN_KIND_NAMES:
            close = difflib.get_close_matches(kind, RUN_KIND_NAMES, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise StoreError(f"run kind {kind!r} given; {hint}allowed: {', '.join(RUN_KIND_NAMES)}")
        where, params = ("", ()) if kind is None else ("WHERE kind = ?", (kind,))
        sql = f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?"
        rows = self._query(sql, (*params, -1 if limit is None else limit), "list the runs of")
        return [RunRecord.from_row(row) for row in rows]

    def measurements(self, run_id: int) -> list[Measurement]:
        """All measurements of a run, in the order they were added, with every raw sample.

        Raises:
            StoreError: the run does not exist.
        """
        run = self.get_run(run_id)
        rows = self._query(
            "SELECT * FROM measurements WHERE run_id = ? ORDER BY id",
            (run.id,),
            f"read the measurements of run {run.id} from",
        )
        return [
            Measurement(
                name=row["name"],
                unit=row["unit"],
                samples=codec.loads_samples(row["samples_json"]),
                higher_is_better=bool(row["higher_is_better"]),
                scenario=row["scenario"],
                params=codec.loads(row["params_json"]),
            )
            for row in rows
        ]

    def record_trial(self, search_key: str, trial_key: str, data: dict[str, Any]) -> None:
        """Record one finished trial of a search, committed on return (a trial is recorded once).

        Raises:
            StoreError: this trial of this search is already recorded, or the store can't be written.
        """
        conn = self._connection(create=True)
        row = (search_key, trial_key, codec.dumps(data, f"trial {trial_key!r}"), now_iso())
        try:
            with db.translate_errors(self.path, f"record trial {trial_key!r} in"):
                conn.execute(
                    "INSERT INTO trials (search_key, trial_key, data_json, created_at) VALUES (?, ?, ?, ?)",
                    row,
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise StoreError(
                    f"trial {trial_key!r} of search {search_key!r} is already recorded"
                ) from None
            raise

    def search_keys(self, prefix: str) -> list[str]:
        """The keys of the searches with trials recorded whose key starts with ``prefix``, oldest first."""
        rows = self._query(
            "SELECT search_key, MIN(id) AS first FROM trials WHERE substr(search_key, 1, ?) = ?"
            " GROUP BY search_key ORDER BY first",
            (len(prefix), prefix),
            "read",
        )
        return [r["search_key"] for r in rows]

    def trials(self, search_key: str) -> dict[str, dict[str, Any]]:
        """Every recorded trial of a search, by trial key, in the order recorded."""
        rows = self._query(
            "SELECT trial_key, data_json FROM trials WHERE search_key = ? ORDER BY id", (search_key,), "read"
        )
        return {r["trial_key"]: codec.loads(r["data_json"]) for r in rows}

    def close(self) -> None:
        """Close the database connection; the store can be reopened by using it again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        # Reads of a store that does not exist yet return None instead of creating files.
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"the store folder {self.root} is a file; set UNBOTTLE_HOME to a folder (it is created "
                "if missing), or unset it to use .unbottle in the current directory"
            )
        if self._conn is None and (create or self.path.exists()):
            self._conn = db.connect(self.path)
        return self._conn

    def _query(self, sql: str, params: tuple[Any, ...], action: str) -> list[sqlite3.Row]:
        conn = self._connection(create=False)
        if conn is None:
            return []
        with db.translate_errors(self.path, action):
            return conn.execute(sql, params).fetchall()

    def _not_found(self, run_id: int | None, kind: str | None) -> str:
        what = "run" if kind is None else f"{kind!r} run"
        name = f"latest {what}" if run_id is None else f"{what} {run_id}"
        latest = self._query("SELECT id, kind FROM runs ORDER BY id DESC LIMIT 1", (), "read")
        if not latest:
            return f"no {name} in {self.path}: the store is empty (no run has been recorded yet)"
        hint = f"the latest run is {latest[0]['id']} ({latest[0]['kind']}); see `unbottle runs list`"
        return f"no {name} in {self.path}; {hint}"


def _parse_ref(ref: str | int) -> int | None:
    """The run id ``ref`` names, or ``None`` for ``"last"``."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref
    if isinstance(ref, str):
        text = ref.strip()
        if text.lower() == LAST:
            return None
        if text.isdigit():
            return int(text)
    raise StoreError(f"run reference {ref!r} is not a run id (e.g. 7) or {LAST!r}; see `unbottle runs list`")
