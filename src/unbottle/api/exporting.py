"""``unbottle.export_runs``: stored runs into MLflow, so they sit beside a team's other experiments.

Each finished run becomes one MLflow run in the experiment (``unbottle`` by default):

- **params**: the run's configuration, flattened (``config.rounds``, ``config.goals``, ...);
- **metrics**: the headline numbers with their intervals: every measurement's median with the ends of
  its 95% interval (``decode.tokens_per_s``, ``….ci_low``, ``….ci_high``; parameters in the name,
  ``decode.tokens_per_s/batch_size-4``), every compared metric's ratio B/A with its interval
  (``ratio/decode.tokens_per_s``, or ``verification/ratio/...`` for an optimisation's), and an
  optimisation's verified gain;
- **tags**: the run's id, kind, model, status, host and command line, and the store it came from;
- **artifacts**: the HTML report, the run's JSON document, the raw samples of every measurement, and
  the recipe (with ``speculation.json``) of a saved model the run names.

An export is safe to repeat: a run already exported from the same store is skipped, and one whose
export was cut short (no ``unbottle.exported`` tag) is deleted and exported again. Runs still running
are skipped. MLflow is an optional extra (``pip install 'unbottle[mlflow]'``), imported only here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from unbottle.api._common import store_of
from unbottle.core.errors import ConfigError
from unbottle.optimizer.result import SPECULATION_FILE
from unbottle.passes.recipe import RECIPE_FILE
from unbottle.reporting.documents import run_document
from unbottle.reporting.output import write_report
from unbottle.store import codec

EXPERIMENT = "unbottle"
DONE_TAG = "unbottle.exported"
STATUS = {"complete": "FINISHED", "goal-missed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")  # what MLflow allows in metric and param names
PARAM_VALUE_MAX = 6000


def export_runs(
    mlflow: str,
    runs: Sequence[int | str] | None = None,
    *,
    experiment: str = EXPERIMENT,
    store: Any = None,
) -> dict[str, Any]:
    """Export runs (ids or ``"last"``; default every finished run) to the MLflow tracking URI
    ``mlflow`` (``sqlite:///mlflow.db``, ``http://HOST:5000``, ...).

    Returns ``{"tracking_uri", "experiment", "exported": [{"run", "mlflow_run"}], "skipped":
    [{"run", "why"}]}``.

    Raises:
        ConfigError: MLflow is not installed, or refuses the URI (the message says how to fix it).
        StoreError: a named run is not in the store.
    """
    st = store_of(store)
    records = [st.get_run(r) for r in runs] if runs else st.list_runs(limit=None)[::-1]
    client, exp_id = _connect(mlflow, experiment)
    out: dict[str, Any] = {"tracking_uri": mlflow, "experiment": experiment, "exported": [], "skipped": []}
    for rec in records:
        status = rec.effective_status
        if status not in STATUS:
            out["skipped"].append({"run": rec.id, "why": f"still {status}: export it when it ends"})
            continue
        done = _earlier_exports(client, exp_id, st, rec.id)
        if done:
            out["skipped"].append({"run": rec.id, "why": f"already exported as MLflow run {done}"})
            continue
        out["exported"].append({"run": rec.id, "mlflow_run": _export_one(client, exp_id, st, rec)})
    return out


def _connect(uri: str, experiment: str) -> tuple[Any, str]:
    """An MLflow client of ``uri`` and the id of ``experiment`` there (created when missing)."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            "exporting to MLflow needs the mlflow extra: pip install 'unbottle[mlflow]' "
            "(mlflow-skinny, and sqlalchemy with alembic for a sqlite:/// database)"
        ) from None
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return client, found.experiment_id
        return client, client.create_experiment(experiment, artifact_location=_artifact_root(uri))
    except MlflowException as exc:
        first = str(exc).split(". ")[0]
        raise ConfigError(
            f"MLflow refused the tracking URI {uri!r}: {first}; give a database such as "
            "sqlite:///mlflow.db (MLflow 3 keeps plain folders only with MLFLOW_ALLOW_FILE_STORE=true) "
            "or a tracking server's http:// address"
        ) from None


def _artifact_root(uri: str) -> str | None:
    """Beside a ``sqlite:///`` database, its artifacts (``NAME-artifacts/``): MLflow would otherwise put
    them in ``./mlruns`` under whatever folder the export ran in. None: the store's own default."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
    return str(db.parent / f"{db.stem}-artifacts")


def _earlier_exports(client: Any, exp_id: str, st: Any, run_id: int) -> str | None:
    """The MLflow run this store's run was exported as (None if none); unfinished exports deleted."""
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`unbottle.run_id` = '{run_id}' and tags.`unbottle.store` = '{st.path}'",
    )
    done = None
    for r in found:
        if r.data.tags.get(DONE_TAG):
            done = r.info.run_id
        else:
            client.delete_run(r.info.run_id)  # cut short: export it again
    return done


def _export_one(client: Any, exp_id: str, st: Any, rec: Any) -> str:
    from mlflow.entities import Metric, Param

    measurements = st.measurements(rec.id)
    doc = run_document(rec, measurements)
    run = client.create_run(
        exp_id,
        start_time=_millis(rec.created_at),
        tags=_tags(st, rec),
        run_name=f"{rec.kind} {rec.model} #{rec.id}",
    )
    rid = run.info.run_id
    stamp = _millis(rec.finished_at or rec.created_at)
    params = [Param(k, v) for k, v in _params(rec.config)]
    metrics = [Metric(k, v, stamp, 0) for k, v in _metrics(doc)]
    for i in range(0, max(len(params), len(metrics)), 100):
        client.log_batch(rid, metrics=metrics[i : i + 100], params=params[i : i + 100])
    with tempfile.TemporaryDirectory() as tmp:
        _artifacts(Path(tmp), st, rec, doc, measurements)
        client.log_artifacts(rid, tmp)
    client.set_tag(rid, DONE_TAG, "true")
    client.set_terminated(rid, STATUS[rec.effective_status], end_time=stamp)
    return rid


def _tags(st: Any, rec: Any) -> dict[str, str]:
    cpu = (rec.manifest.get("cpu") or {}).get("model")
    tags = {
        "unbottle.run_id": str(rec.id),
        "unbottle.store": str(st.path),
        "unbottle.kind": rec.kind,
        "unbottle.model": rec.model,
        "unbottle.status": rec.effective_status,
        "unbottle.host": rec.host or "",
        "unbottle.cpu": str(cpu or ""),
        "mlflow.source.name": " ".join(rec.argv or []) or "unbottle (Python)",
    }
    if rec.error:
        tags["unbottle.error"] = rec.error[:PARAM_VALUE_MAX]
    return tags


def _params(config: dict[str, Any], prefix: str = "config") -> Iterator[tuple[str, str]]:
    """Flattened ``(name, value)`` pairs; lists and other leaves as JSON, cut to MLflow's limit."""
    for key, value in config.items():
        name = _safe(f"{prefix}.{key}")
        if isinstance(value, dict) and value:
            yield from _params(value, name)
        else:
            text = value if isinstance(value, str) else json.dumps(codec.plain(value))
            yield name, text[:PARAM_VALUE_MAX]


def _metrics(doc: dict[str, Any]) -> list[tuple[str, float]]:
    """Measurement medians and ratios B/A, each with its 95% interval; names made unique."""
    out: list[tuple[str, float]] = []
    for m in doc.get("metrics", []):
        params = "/".join(f"{k}-{v}" for k, v in sorted(m["params"].items()))
        name = _safe(m["name"] + (f"/{params}" if params else ""))
        out += _with_interval(name, m["p50"], *m["ci95_median"])
    for path, metrics in _comparisons(doc):
        for name, entry in metrics.items():
            ratio = entry.get("ratio") or {}
            if "point" in ratio:
                key = _safe("/".join([*path, "ratio", name]))
                out += _with_interval(key, ratio["point"], ratio["ci_low"], ratio["ci_high"])
    winner = (doc.get("optimize") or {}).get("winner") or {}
    if winner.get("gain"):
        out += _with_interval("optimize/winner_gain", *winner["gain"])
    seen: dict[str, int] = {}
    unique = []
    for name, value in out:
        seen[name] = seen.get(name, 0) + 1
        unique.append((name if seen[name] == 1 else f"{name}_{seen[name]}", float(value)))
    return [(n, v) for n, v in unique if v == v and abs(v) != float("inf")]  # MLflow stores finite values


def _with_interval(name: str, point: float, low: float, high: float) -> list[tuple[str, float]]:
    return [(name, point), (f"{name}.ci_low", low), (f"{name}.ci_high", high)]


def _comparisons(doc: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every ``comparison_document`` in the run's document, with where it sits (top level: no path)."""
    if not isinstance(doc, dict):
        return
    metrics = doc.get("metrics")
    if isinstance(metrics, dict) and all(isinstance(v, dict) for v in metrics.values()):
        yield path, metrics
    for key, value in doc.items():
        if isinstance(value, dict) and key != "metrics":
            yield from _comparisons(value, path if key == "comparison" else (*path, key))


def _artifacts(folder: Path, st: Any, rec: Any, doc: dict[str, Any], measurements: list[Any]) -> None:
    """The report, the document, the raw samples, and the recipe of a saved model the run names."""
    write_report(st, rec.id, folder / "report.html", "html")
    (folder / "document.json").write_text(json.dumps(codec.plain(doc), indent=1))
    samples = [codec.plain(m.to_dict()) for m in measurements]
    (folder / "samples.json").write_text(json.dumps(samples, indent=1))
    saved = _saved_folder(doc)
    if saved is not None:
        target = folder / "recipe"
        target.mkdir()
        for name in (RECIPE_FILE, SPECULATION_FILE):
            if (saved / name).exists():
                shutil.copy(saved / name, target / name)


def _saved_folder(doc: Any) -> Path | None:
    """The first folder the document names as ``output`` that holds a recipe (None if none)."""
    if not isinstance(doc, dict):
        return None
    for key, value in doc.items():
        if key == "output" and isinstance(value, str) and (Path(value) / RECIPE_FILE).exists():
            return Path(value)
        found = _saved_folder(value)
        if found is not None:
            return found
    return None


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:250]


def _millis(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)
