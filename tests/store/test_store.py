"""The experiment store keeps runs and raw samples exactly, finds runs by reference, and fails clearly."""

from __future__ import annotations

import math
import os
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from unbottle.core.errors import StoreError
from unbottle.core.measurement import Measurement
from unbottle.store import RunRecord, Store, schema, schema_version, store_root
from unbottle.store.records import now_iso

CONFIG = {"scenario": "decode", "batch_size": 4, "dtypes": ["bf16", "fp32"], "warmup": 0.5}
MANIFEST = {"cpu": "test-cpu", "threads": 2, "torch": "2.13.0"}


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "home") as s:
        yield s


def _measurement(name: str = "decode.token_latency", samples: list[float] | None = None) -> Measurement:
    return Measurement(
        name=name,
        unit="s",
        samples=[0.1, 0.2, 0.30000000000000004] if samples is None else samples,
        higher_is_better=False,
        scenario="decode",
        params={"batch_size": 4},
    )


def test_start_run_round_trips_every_field(store: Store) -> None:
    run_id = store.start_run("bench", "tiny-gpt2", CONFIG, MANIFEST, argv=["unbottle", "bench", "tiny"])
    run = store.get_run(run_id)
    assert (run.id, run.kind, run.model, run.status) == (run_id, "bench", "tiny-gpt2", "running")
    assert run.config == CONFIG and run.manifest == MANIFEST
    assert run.argv == ["unbottle", "bench", "tiny"]
    assert (run.pid, run.host) == (os.getpid(), socket.gethostname())
    assert run.finished_at is None and run.result is None and run.error is None
    assert run.created_at.endswith("+00:00"), run.created_at
    assert run.effective_status == "running"  # this very process is alive


def test_finish_run_records_result_and_error(store: Store) -> None:
    done = store.start_run("bench", "m", CONFIG, MANIFEST)
    store.finish_run(done, "complete", result={"decode_tokens_per_s": 123.5})
    failed = store.start_run("bench", "m", CONFIG, MANIFEST)
    store.finish_run(failed, "failed", error="out of memory")
    assert store.get_run(done).status == "complete"
    assert store.get_run(done).result == {"decode_tokens_per_s": 123.5}
    assert store.get_run(done).finished_at is not None
    assert (store.get_run(failed).status, store.get_run(failed).error) == ("failed", "out of memory")


def test_a_complete_run_that_missed_its_goal_is_listed_as_goal_missed(store: Store) -> None:
    missed = store.start_run("optimize", "m", CONFIG, MANIFEST)
    store.finish_run(missed, "complete", result={}, outcome="goal-missed")
    met = store.start_run("optimize", "m", CONFIG, MANIFEST)
    store.finish_run(met, "complete", result={}, outcome="goal-met")
    assert (store.get_run(missed).status, store.get_run(missed).effective_status) == (
        "complete",
        "goal-missed",
    )
    assert store.get_run(met).effective_status == "complete"
    bad = store.start_run("optimize", "m", CONFIG, MANIFEST)
    with pytest.raises(StoreError, match="an outcome is one of"):
        store.finish_run(bad, "failed", error="x", outcome="goal-missed")
    with pytest.raises(StoreError, match="an outcome is one of"):
        store.finish_run(bad, "complete", outcome="great")


def test_a_store_written_before_outcomes_existed_is_upgraded(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "unbottle.db", isolation_level=None)) as raw:
        for statement in (*schema.MIGRATIONS[0], *schema.MIGRATIONS[1]):
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
        raw.execute(
            "INSERT INTO runs (kind, model, status, created_at, config_json, manifest_json)"
            " VALUES ('bench', 'm', 'complete', ?, '{}', '{}')",
            (now_iso(),),
        )
    with Store(tmp_path) as s:
        assert (s.get_run(1).outcome, s.get_run(1).effective_status) == (None, "complete")
        new = s.start_run("optimize", "m", CONFIG, MANIFEST)
        s.finish_run(new, "complete", outcome="goal-missed")
        assert s.get_run(new).effective_status == "goal-missed"


def test_measurements_preserve_raw_samples_exactly_in_insertion_order(store: Store) -> None:
    run_id = store.start_run("bench", "m", CONFIG, MANIFEST)
    tricky = [0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, -2.5, 3, 0.0, -0.0, 1 / 3]
    added = [_measurement("a", tricky), _measurement("b"), _measurement("c", [])]
    for m in added:
        store.add_measurement(run_id, m)
    got = store.measurements(run_id)
    assert [m.name for m in got] == ["a", "b", "c"]
    assert got == added
    assert [x.hex() if isinstance(x, float) else x for x in got[0].samples] == [
        x.hex() if isinstance(x, float) else x for x in tricky
    ], "samples must come back bit-identical"


def test_nonfinite_values_round_trip_in_samples_and_become_strings_in_dicts(store: Store) -> None:
    run_id = store.start_run("bench", "m", {"budget": math.inf}, MANIFEST)
    store.add_measurement(run_id, _measurement(samples=[math.nan, math.inf, -math.inf, 1.5]))
    store.finish_run(run_id, "complete", result={"ratio": math.nan})
    samples = store.measurements(run_id)[0].samples
    assert math.isnan(samples[0]) and samples[1:] == [math.inf, -math.inf, 1.5]
    assert store.get_run(run_id).config == {"budget": "Infinity"}
    assert store.get_run(run_id).result == {"ratio": "NaN"}
    with closing(sqlite3.connect(store.path)) as conn:
        raw = conn.execute("SELECT samples_json FROM measurements").fetchone()[0]
    assert raw == '["NaN", "Infinity", "-Infinity", 1.5]', "the column must stay strict JSON"


def test_start_run_rejects_data_that_is_not_json(store: Store) -> None:
    with pytest.raises(StoreError, match="the run config cannot be stored as JSON"):
        store.start_run("bench", "m", {"path": Path("/x")}, MANIFEST)


def test_get_run_last_is_the_newest_and_filters_by_kind(store: Store) -> None:
    first = store.start_run("bench", "m", CONFIG, MANIFEST)
    second = store.start_run("train", "m", CONFIG, MANIFEST)
    assert store.get_run("last").id == second
    assert store.get_run(" LAST ").id == second
    assert store.get_run("last", kind="bench").id == first
    assert store.get_run(str(first)).id == first


def test_get_run_unknown_id_names_the_latest_run(store: Store) -> None:
    latest = store.start_run("bench", "m", CONFIG, MANIFEST)
    with pytest.raises(StoreError) as info:
        store.get_run(42)
    message = str(info.value)
    assert "no run 42" in message and str(store.path) in message
    assert f"the latest run is {latest}" in message and "unbottle runs list" in message
    with pytest.raises(StoreError, match="no latest 'eval' run"):
        store.get_run("last", kind="eval")
    with pytest.raises(StoreError, match="is a 'bench' run, not 'eval'"):
        store.get_run(latest, kind="eval")


def test_get_run_on_empty_store_says_it_is_empty(store: Store) -> None:
    for ref in ("last", 1):
        with pytest.raises(StoreError, match="the store is empty"):
            store.get_run(ref)


@pytest.mark.parametrize("ref", ["latest", "-1", "1.5", "", True])
def test_get_run_rejects_malformed_references(store: Store, ref: object) -> None:
    with pytest.raises(StoreError, match="is not a run id"):
        store.get_run(ref)  # type: ignore[arg-type]


def test_list_runs_is_newest_first_with_limit_and_kind(store: Store) -> None:
    ids = [store.start_run("bench" if i % 2 else "train", "m", CONFIG, MANIFEST) for i in range(5)]
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(limit=2)] == ids[:2:-1]
    assert [r.id for r in store.list_runs(kind="bench")] == [ids[3], ids[1]]
    assert len(store.list_runs(limit=None)) == 5


def test_runs_are_append_only(store: Store) -> None:
    run_id = store.start_run("bench", "m", CONFIG, MANIFEST)
    store.add_measurement(run_id, _measurement())
    store.finish_run(run_id, "complete", result={"x": 1})
    with pytest.raises(StoreError, match="already complete"):
        store.finish_run(run_id, "failed", error="late")
    with pytest.raises(StoreError, match="only be added to a running run"):
        store.add_measurement(run_id, _measurement())
    with closing(sqlite3.connect(store.path)) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM runs")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE measurements SET samples_json = '[]'")
    assert store.get_run(run_id).result == {"x": 1} and len(store.measurements(run_id)) == 1


def test_finish_run_rejects_a_non_final_status(store: Store) -> None:
    run_id = store.start_run("bench", "m", CONFIG, MANIFEST)
    with pytest.raises(StoreError, match="allowed: \\['complete', 'failed', 'interrupted'\\]"):
        store.finish_run(run_id, "running")


def test_add_measurement_to_unknown_run_fails(store: Store) -> None:
    store.start_run("bench", "m", CONFIG, MANIFEST)
    with pytest.raises(StoreError, match="no run 9"):
        store.add_measurement(9, _measurement())


def test_database_uses_wal_and_records_schema_version(store: Store) -> None:
    store.start_run("bench", "m", CONFIG, MANIFEST)
    with closing(sqlite3.connect(store.path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == schema_version() >= 1
    conn = store._connection(create=False)
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_store_root_honours_unbottle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNBOTTLE_HOME", str(tmp_path / "elsewhere"))
    assert store_root() == tmp_path / "elsewhere"
    with Store() as s:
        s.start_run("bench", "m", CONFIG, MANIFEST)
    assert (tmp_path / "elsewhere" / "unbottle.db").is_file()


def test_store_root_defaults_to_dot_unbottle_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNBOTTLE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert store_root() == tmp_path / ".unbottle"
    assert Store().path == tmp_path / ".unbottle" / "unbottle.db"


def test_reading_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "absent") as s:
        assert s.list_runs() == []
        with pytest.raises(StoreError, match="the store is empty"):
            s.get_run("last")
    assert not (tmp_path / "absent").exists()


def test_corrupt_database_file_raises_store_error_with_fix(tmp_path: Path) -> None:
    (tmp_path / "unbottle.db").write_bytes(b"this is not an SQLite database\n" * 200)
    with Store(tmp_path) as s, pytest.raises(StoreError) as info:
        s.list_runs()
    message = str(info.value)
    assert str(tmp_path / "unbottle.db") in message
    assert "mv " in message and "UNBOTTLE_HOME" in message


def test_unwritable_folder_raises_store_error_with_fix(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with Store(tmp_path / "a-file" / "home") as s, pytest.raises(StoreError, match="UNBOTTLE_HOME"):
        s.start_run("bench", "m", CONFIG, MANIFEST)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "unbottle.db")) as raw:
        raw.execute(f"PRAGMA user_version = {schema_version() + 1}")
    with Store(tmp_path) as s, pytest.raises(StoreError, match="upgrade unbottle"):
        s.list_runs()


def test_store_reopens_after_close(tmp_path: Path) -> None:
    s = Store(tmp_path)
    run_id = s.start_run("bench", "m", CONFIG, MANIFEST)
    s.close()
    s.close()  # idempotent
    assert s.get_run(run_id).id == run_id
    s.close()


def _record(**changes: object) -> RunRecord:
    fields = dict(
        id=1, kind="bench", model="m", status="running", created_at=now_iso(),
        finished_at=None, config={}, manifest={}, result=None, error=None, argv=None,
        pid=os.getpid(), host=socket.gethostname(),
    )  # fmt: skip
    return RunRecord(**{**fields, **changes})  # type: ignore[arg-type]


def test_effective_status_is_interrupted_when_the_process_is_gone() -> None:
    # pid_max on Linux is at most 2**22, so this pid cannot exist.
    assert _record(pid=2**22 + 17).effective_status == "interrupted"


def test_effective_status_is_interrupted_when_the_pid_was_reused() -> None:
    # This process started long after 2000, so it cannot be the process of a run created then.
    assert _record(created_at="2000-01-01T00:00:00+00:00").effective_status == "interrupted"


def test_effective_status_keeps_recorded_status_when_it_cannot_check() -> None:
    assert _record(host="another-machine", pid=2**22 + 17).effective_status == "running"
    assert _record(status="complete", pid=2**22 + 17).effective_status == "complete"


def test_appended_migration_upgrades_an_existing_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(tmp_path) as s:
        run_id = s.start_run("bench", "m", CONFIG, MANIFEST)
    artefacts = ("CREATE TABLE artefacts (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs (id))",)
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, artefacts])
    with Store(tmp_path) as s:
        assert s.get_run(run_id).config == CONFIG
    with closing(sqlite3.connect(tmp_path / "unbottle.db")) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'artefacts'").fetchone() == (
            "artefacts",
        )


def test_listing_an_unknown_kind_is_refused_with_the_kinds_not_reported_empty(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(StoreError, match=r"run kind 'trian' given; did you mean train\? allowed: ab, apply"):
        store.list_runs(kind="trian")
    assert store.list_runs(kind="train") == []


def test_a_store_folder_that_is_a_file_is_one_clear_error(tmp_path):
    afile = tmp_path / "home"
    afile.write_text("not a folder")
    with pytest.raises(StoreError, match="store folder .*home is a file; set UNBOTTLE_HOME to a folder"):
        Store(afile).list_runs()
    assert afile.read_text() == "not a folder"


def test_every_registered_run_kind_is_a_kind_the_store_lists():
    from unbottle.reporting.run_kinds import RUN_KINDS
    from unbottle.store.store import RUN_KIND_NAMES

    assert set(RUN_KINDS.names()) <= set(RUN_KIND_NAMES)
