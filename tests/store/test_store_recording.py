"""``Store.recording``: one lifecycle for every verb — complete on return, failed or interrupted when
the body raises (the error kept), never finished twice, the command line kept when the CLI set it."""

from __future__ import annotations

import pytest

from unbottle.core.errors import StoreError
from unbottle.core.measurement import Measurement
from unbottle.store import COMMAND_LINE, Store


def _m() -> Measurement:
    return Measurement(name="decode.tokens_per_s", scenario="decode", unit="tok/s", samples=[1.0, 2.0])


def test_a_body_that_returns_completes_the_run_with_what_it_wrote(tmp_path):
    store = Store(tmp_path)
    with store.recording("bench", "tiny", {"a": 1}, manifest={}) as run:
        run.add(_m())
        run.complete({"notes": ["n"]})
    stored = store.get_run(run.id)
    assert (stored.status, stored.result, stored.argv) == ("complete", {"notes": ["n"]}, None)
    assert [m.samples for m in store.measurements(run.id)] == [[1.0, 2.0]]
    with store.recording("bench", "tiny", {}, manifest={}) as quiet:
        pass
    assert store.get_run(quiet.id).status == "complete"


@pytest.mark.parametrize(
    ("exc", "status"), [(ValueError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")]
)
def test_a_body_that_raises_finishes_the_run_and_the_exception_goes_on(tmp_path, exc, status):
    store = Store(tmp_path)
    with pytest.raises(type(exc)), store.recording("eval", "tiny", {}, manifest={}) as run:
        run.add(_m())
        raise exc
    stored = store.get_run(run.id)
    assert stored.status == status and type(exc).__name__ in stored.error
    assert len(store.measurements(run.id)) == 1  # what it measured stays


def test_a_completed_run_stays_complete_and_is_finished_once(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.recording("ab", "a vs b", {}, manifest={}) as run:
        run.complete({"x": 1})
        raise RuntimeError("after the result was stored")
    assert store.get_run(run.id).status == "complete"
    with pytest.raises(StoreError, match="finished once"):
        run.complete()


def test_the_cli_command_line_is_recorded(tmp_path):
    store = Store(tmp_path)
    token = COMMAND_LINE.set(["unbottle", "bench", "tiny"])
    try:
        with store.recording("bench", "tiny", {}, manifest={}) as run:
            pass
    finally:
        COMMAND_LINE.reset(token)
    assert store.get_run(run.id).argv == ["unbottle", "bench", "tiny"]
