"""The isolated side of ``run_isolated``: read a job from stdin, call it, write the result file.

Errors are written as one line (``Type: message``) so the parent can record why a trial failed;
the file is written to a temporary name and renamed, so a half-written result is never read.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys

from unbottle.core.naming import SPEAKS_FLAGS


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the search process dies (even by SIGKILL), so
    an interrupted search leaves no orphan burning CPU."""
    if not sys.platform.startswith("linux"):
        return

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def main() -> None:
    _die_with_parent()
    job = json.loads(sys.stdin.read())
    module, _, attr = job["target"].partition(":")
    SPEAKS_FLAGS.set(bool(job.get("speaks_flags")))  # errors name settings as the parent's caller knows them
    try:
        result = {"result": getattr(importlib.import_module(module), attr)(job["payload"])}
    except Exception as exc:  # every failure of the trial is data for the search, not a crash
        result = {"error": f"{type(exc).__name__}: {exc}"}
    tmp = job["result_path"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, job["result_path"])


if __name__ == "__main__":
    main()
