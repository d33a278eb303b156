"""What a stored run looks like to the rest of unbottle, and how to tell a live run from a dead one.

A process killed with ``kill -9`` (or by the OOM killer, or a power cut) never gets to mark its run
finished, so its row says ``running`` forever. ``RunRecord.effective_status`` reports such a run as
``interrupted`` when it was started on this host and its process is gone, without rewriting the row:
the store only records what a run said about itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import sqlite3
from typing import Any, Literal

import psutil

from unbottle.store import codec

RunStatus = Literal["running", "complete", "failed", "interrupted"]

# A process that started this long after its run was created cannot be the run's own process: the pid
# was reused. The slack absorbs the coarse clock psutil derives process start times from.
_PID_REUSE_SLACK_S = 2.0


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run as stored.

    Attributes:
        id: the run's number, unique and never reused within a store.
        kind: what made it, e.g. ``"bench"``.
        model: the model spec the run used.
        status: what the run last said about itself: running, complete, failed or interrupted.
        created_at: start time, ISO 8601 in UTC, e.g. ``"2025-01-31T12:00:00.123456+00:00"``.
        finished_at: finish time in the same format, or ``None`` while running.
        config: the run's configuration, as given to ``Store.start_run``.
        manifest: the environment manifest (hardware, library versions, seeds).
        result: the summary given to ``Store.finish_run``, or ``None``.
        error: the error message of a failed run, or ``None``.
        argv: the command line that started the run, or ``None``.
        pid: the id of the process that started the run.
        host: the host name of the machine that started the run.
        outcome: for a complete run that had a goal, ``goal-met`` or ``goal-missed``; else None.
    """

    id: int
    kind: str
    model: str
    status: RunStatus
    created_at: str
    finished_at: str | None
    config: dict[str, Any]
    manifest: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    argv: list[str] | None
    pid: int | None
    host: str | None
    outcome: str | None = None

    @property
    def effective_status(self) -> str:
        """``status``, except that a ``running`` run whose process died on this host is ``interrupted``
        and a complete run that missed its goal is ``goal-missed``.

        A run started on another host cannot be checked and keeps its recorded status.
        """
        if self.status == "complete" and self.outcome == "goal-missed":
            return "goal-missed"
        if self.status != "running" or self.pid is None or self.host != socket.gethostname():
            return self.status
        return "running" if pid_runs_since(self.pid, self.created_at) else "interrupted"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        """Build a record from a ``runs`` row, decoding its JSON columns."""
        return cls(
            id=row["id"],
            kind=row["kind"],
            model=row["model"],
            status=row["status"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            config=codec.loads(row["config_json"]),
            manifest=codec.loads(row["manifest_json"]),
            result=codec.loads(row["result_json"]),
            error=row["error"],
            argv=codec.loads(row["argv_json"]),
            pid=row["pid"],
            host=row["host"],
            outcome=row["outcome"],
        )


def now_iso() -> str:
    """The current time as ISO 8601 in UTC with microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def pid_runs_since(pid: int, created_at: str) -> bool:
    """Whether process ``pid`` is alive and is the same process that existed at ``created_at``.

    Args:
        pid: a process id on this machine.
        created_at: ISO 8601 time the run was created; a live process that started after it reuses
            the pid of the run's dead process.

    Returns:
        ``False`` if the process is gone, a zombie, or a newer process with a reused pid.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; we just may not look at it
    try:
        created = dt.datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return True
    return started <= created + _PID_REUSE_SLACK_S
