"""Work done once per model before the search's clock starts: the caches the trials read.

A ``.gguf`` model is converted to a safetensors folder the first time it loads (65 s for Gemma 3
270M on a 2-core machine; ``unbottle.sources.gguf_file``), and the ONNX candidates start from one
float export per model (``unbottle.passes.onnx.float_graph``). Paid inside a trial, either would be
charged to the time budget and to that trial's timeout, and would make the baseline look slower than
it is. The same goes for the GenAI builds (``genai`` candidates: 20-60 s each, cached by weights and
settings). The search fills the caches first, in a worker like any trial, and starts its clock after;
when they exist the check is a file lookup (a worker only runs when something is missing).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from unbottle.core.errors import ConfigError, UnbottleError
from unbottle.models import resolve
from unbottle.optimizer import isolate
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.trial import load_model
from unbottle.passes import apply_
from unbottle.passes.genai import GenaiConfig
from unbottle.passes.onnx import OnnxExportConfig, export_key, weights_digest, write_export
from unbottle.passes.onnx_store import default_folder, reusable
from unbottle.sources.gguf_file import _DONE, GGUFSource
from unbottle.stats.goals import Goal

RECORD_KEY = "prepare"  # the trial key the outcome is recorded under (not a trial of the search)
FILL = "unbottle.optimizer.prepare:fill_caches"  # the worker function, for ``run_isolated``
PREPARE_TIMEOUT_S = 1800.0


def onnx_exports(candidates: list[Any]) -> list[dict[str, Any]]:
    """The float exports the candidates start from: ``{"opset", "attention"}`` per distinct one.

    Only candidates whose first pass is ``onnx`` (into the default cache) export the model as loaded;
    a composition exports weights changed by the passes before it, which can't be prepared.
    """
    seen: list[dict[str, Any]] = []
    for cand in candidates:
        first = cand.configs[0] if cand.configs else None
        if first is None or first.name != "onnx" or first.output is not None:
            continue
        item = {"opset": first.opset, "attention": first.attention}
        if item not in seen:
            seen.append(item)
    return seen


def gguf_pending(spec: str) -> bool:
    """True when ``spec`` is a ``.gguf`` file whose safetensors cache is not written yet."""
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        return False
    source = resolve(spec)
    return isinstance(source, GGUFSource) and not (source.cache_dir() / _DONE).exists()


def genai_builds(candidates: list[Any]) -> list[dict[str, Any]]:
    """The GenAI builds single-pass ``genai`` candidates (into the default cache) load: their configs."""
    seen: list[dict[str, Any]] = []
    for cand in candidates:
        if len(cand.configs) != 1 or cand.configs[0].name != "genai" or cand.configs[0].output is not None:
            continue
        item = {**cand.configs[0].to_dict(), "verify": False, "threads": None, "prefill": "genai"}  # run-only
        if item not in seen:
            seen.append(item)
    return seen


def from_gguf(spec: str) -> bool:
    """True when ``spec`` loads from a ``.gguf`` file (a path, or a packaged model shipped as one)."""
    try:
        source = resolve(spec)
    except UnbottleError:
        return False
    return isinstance(source, GGUFSource) or hasattr(source, "gguf_path")


def exports_ready(
    recorded: dict[str, Any] | None, wanted: list[dict[str, Any]], what: str = "exports"
) -> bool:
    """True when an earlier run of this search wrote ``wanted`` (``what``: ``exports`` or ``builds``)
    and the folders are still there."""
    if not wanted:
        return True
    exports = ((recorded or {}).get("result") or {}).get(what) or []
    done = [e for e in exports if e.get("folder") and (Path(e["folder"]) / "export.json").exists()]
    return all(any(e["settings"] == w for e in done) for w in wanted)


def fill_caches(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker: load the model once (a ``.gguf`` is converted) and write the float ONNX exports.

    Payload: ``model`` (the spec) and ``onnx`` (``onnx_exports``). An export that fails is reported
    with its reason; the candidate's own trial then fails the same way and says so.
    """
    start = time.perf_counter()
    loaded = load_model(payload["model"])
    out: dict[str, Any] = {
        "load_s": time.perf_counter() - start,
        "converted": any(n.startswith("converted GGUF") for n in loaded.info.notes),
        "exports": [],
    }
    digest = None
    for settings in payload["onnx"]:
        t = time.perf_counter()
        try:
            if digest is None:
                digest = weights_digest(loaded.model)
            folder, reused = _float_export(loaded.model, settings, digest)
            entry = {"settings": settings, "folder": str(folder), "reused": reused}
        except Exception as exc:  # the candidate's trial reports the same failure in its place
            entry = {"settings": settings, "error": f"{type(exc).__name__}: {exc}"}
        out["exports"].append({**entry, "seconds": time.perf_counter() - t})
    out["builds"] = [_genai_build(loaded, settings) for settings in payload.get("genai", [])]
    return out


def _genai_build(loaded: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """One GenAI build into its cache (reused when there); a failure is reported, not raised."""
    t = time.perf_counter()
    try:
        built, [report] = apply_(loaded, [GenaiConfig.from_dict(settings)], copy_model=False)
        reused = any(n.startswith("reused the build") for n in report.notes)
        entry = {"settings": settings, "folder": str(built.model.folder), "reused": reused}
    except Exception as exc:  # the candidate's trial reports the same failure in its place
        entry = {"settings": settings, "error": f"{type(exc).__name__}: {exc}"}
    return {**entry, "seconds": time.perf_counter() - t}


def _float_export(model: Any, settings: dict[str, Any], digest: str) -> tuple[Path, bool]:
    """The cached float export for these settings, written when missing (as ``float_graph`` does)."""
    config = OnnxExportConfig(opset=settings["opset"], attention=settings["attention"], verify=False)
    key = export_key(model, config, digest)
    folder = default_folder(key)
    if reusable(folder, key) is not None:
        return folder, True
    write_export(model, config, folder, key, digest)
    return folder, False


def _label(settings: dict[str, Any]) -> str:
    """``genai:weights=gguf`` for the recorded settings of a build (run-only settings left out)."""
    config = GenaiConfig.from_dict({**settings, "verify": True})
    return config.label()


def describe(result: dict[str, Any], seconds: float) -> str:
    """One log line about what the preparation did."""
    done = []
    if result.get("converted"):
        done.append("converted the GGUF file to a safetensors cache")
    for e in result.get("exports", []):
        what = f"ONNX float export (opset {e['settings']['opset']}, {e['settings']['attention']})"
        if "error" in e:
            done.append(f"{what} failed: {e['error']}")
        else:
            done.append(f"{what} {'already cached' if e['reused'] else 'written'} in {e['seconds']:.0f} s")
    for e in result.get("builds", []):
        what = "GenAI build " + _label(e["settings"])
        if "error" in e:
            done.append(f"{what} failed: {e['error']}")
        else:
            done.append(f"{what} {'already cached' if e['reused'] else 'written'} in {e['seconds']:.0f} s")
    return f"prepared in {seconds:.0f} s, outside the time budget: " + ("; ".join(done) or "caches in place")


def prepare_search(search: Any) -> None:
    """Fill the model caches ``search``'s trials read (in one worker, outside the time budget), then
    start its budget's clock; once per search."""
    if search.preparation is not None:
        return
    start = time.monotonic()
    # an encoder's onnx candidates export two small graphs in their own trials (no float export to share)
    exports = [] if search.cfg.is_encoder() else onnx_exports(search.first_round()[0])
    builds = genai_builds(search.first_round()[0])
    try:
        gguf = gguf_pending(search.cfg.model)
    except UnbottleError:
        gguf = False  # an unloadable model: the baseline says why
    search.preparation = {"worker": False, "gguf_converted": False, "onnx_exports": []}
    recorded = search.recorded.get(RECORD_KEY)
    ready = exports_ready(recorded, exports) and exports_ready(recorded, builds, "builds")
    if gguf or not ready:
        _fill_caches(search, gguf, exports, builds)
    search.preparation["seconds"] = time.monotonic() - start
    search.log(f"prepared in {search.preparation['seconds']:.1f} s; the time budget starts now")
    search.start = time.monotonic()
    if search.on_clock_start is not None:
        search.on_clock_start()


def _fill_caches(
    search: Any, gguf: bool, exports: list[dict[str, Any]], builds: list[dict[str, Any]]
) -> None:

    what = ["the GGUF → safetensors conversion"] * gguf + ["the float ONNX export"] * bool(exports)
    what += ["the GenAI builds"] * bool(builds)
    search.log(f"preparing outside the time budget: {' and '.join(what)} …")
    payload = {"model": search.cfg.model, "onnx": exports, "genai": builds}
    limit = max(PREPARE_TIMEOUT_S, search.cfg.trial_timeout_s)
    outcome = isolate.run_isolated(FILL, payload, limit, search.memory_limit())
    assert search.preparation is not None
    search.preparation["worker"] = True
    if outcome.status != "ok":
        search.log(f"preparation {outcome.status}: {outcome.reason}; the trials will meet it again")
        search.preparation["failed"] = outcome.reason
        return
    search.log(describe(outcome.result, outcome.seconds))
    if RECORD_KEY not in search.recorded:  # recorded once; later runs check its folders
        data = {"key": RECORD_KEY, "stage": "prepare", **outcome.to_dict()}
        search.store.record_trial(search.key, RECORD_KEY, data)
    search.preparation.update(
        gguf_converted=outcome.result["converted"], onnx_exports=outcome.result["exports"]
    )


def with_model_task(config: OptimizeConfig) -> OptimizeConfig:
    """``config`` with the task its model loads for (``ModelSource.probe_task``, no weights loaded);
    a config made with a causal LM's default objective gets the encoder's default.

    Raises:
        ConfigError: a goal on the masked-LM head's pseudo-perplexity for a checkpoint without the head.
    """
    source = resolve(config.model)
    task = source.probe_task()
    if any(Goal.parse(g).metric == "pseudo_perplexity" for g in config.goals) and not source.probe_head():
        raise ConfigError(
            f"{config.model!r} was saved without its masked-LM head, so its pseudo-perplexity can't guard "
            "the search; guard its embeddings (embedding_cosine:max-degradation=0.02, the default)"
        )
    if task == config.model_task:
        return config
    objective = "auto" if config.objective == "decode" else config.objective
    return dataclasses.replace(config, model_task=task, objective=objective)
