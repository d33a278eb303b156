"""A run's lifecycle: started in the store, written to as it goes, finished exactly once.

Every verb records itself the same way, whether called from Python or from the command line::

    with store.recording("bench", "smollm2-135m", config.to_dict()) as run:
        run.add(measurement)          # committed at once: a crash keeps it
        run.complete({"notes": []})   # or leave the block: complete with no result

If the body raises, the run is finished as ``failed`` (``interrupted`` on Ctrl-C) with the error, and
the exception goes on. The command line, when there is one, is recorded from ``COMMAND_LINE``, which
the CLI sets; a run started from Python has none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from unbottle.core.env import manifest as environment
from unbottle.core.measurement import Measurement

if TYPE_CHECKING:
    from unbottle.store.store import Store

COMMAND_LINE: ContextVar[list[str] | None] = ContextVar("unbottle_command_line", default=None)


class RunWriter:
    """The handle of one running run.

    Attributes:
        store: where it is recorded; id: the run's id; finished: whether it was finished.
    """

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.id = run_id
        self.finished = False

    def add(self, m: Measurement) -> int:
        """Append one measurement with its raw samples (committed on return); its id."""
        return self.store.add_measurement(self.id, m)

    def complete(self, result: dict[str, Any] | None = None, outcome: str | None = None) -> None:
        """Finish the run as complete with its summary (and, for a run with a goal, its ``outcome``:
        ``goal-met`` or ``goal-missed``)."""
        self.store.finish_run(self.id, "complete", result=result, outcome=outcome)
        self.finished = True

    def __repr__(self) -> str:
        return f"RunWriter(run {self.id}, {'finished' if self.finished else 'running'})"


@contextlib.contextmanager
def recording(
    store: Store,
    kind: str,
    model: str,
    config: dict[str, Any],
    manifest: dict[str, Any] | None = None,
) -> Iterator[RunWriter]:
    """Start a run; finish it as failed or interrupted if the body raises, complete if it returns.

    Args:
        store: the store to record in.
        kind: the run kind (``"bench"``, ``"optimize"``, ...); model: the model spec as given.
        config: the run's settings (JSON-able).
        manifest: the environment; ``core.env.manifest()`` when None.
    """
    if manifest is None:
        manifest = environment()
    run = RunWriter(store, store.start_run(kind, model, config, manifest, argv=COMMAND_LINE.get()))
    try:
        yield run
    except BaseException as exc:
        if not run.finished:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            store.finish_run(run.id, status, error=f"{type(exc).__name__}: {exc}")
            run.finished = True
        raise
    if not run.finished:
        run.complete()
