"""Trial functions that misbehave on purpose, for the isolation tests (imported by the worker)."""

from __future__ import annotations

import ctypes
import time


def ok(payload):
    return {"doubled": payload["x"] * 2}


def raises(payload):
    raise ValueError(f"bad candidate {payload['x']}")


def segfault(payload):
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def hog(payload):
    blocks = []
    for _ in range(payload["mib"] // 50):
        blocks.append(bytearray(50 * 2**20))  # zero-filled: resident immediately
        time.sleep(0.02)
    return len(blocks)


def sleeps(payload):
    time.sleep(payload["s"])
    return "woke"
