"""Hotspots of a model that runs as one ONNX graph (``onnx`` and ``genai`` passes).

``torch.profiler`` sees a graph model as a single opaque call, so its profile would read "everything
outside kernels" and recommend compiling. For these models the phase is timed through the model's own
loop as usual, and the breakdown comes from ONNX Runtime's profiler on the same graph in a plain
session: kernel time per operator and per module group (from the node names the exporters write),
the executor's time between kernels inside the graph (``graph overhead``), and the rest of the wall
time, spent outside the graph (``other``: the decode loop, cache handling, Python). The engine's
own ceiling for the decode step is ``graph_ceiling``'s.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from unbottle.profiling.hotspots import PhaseProfile, _timed
from unbottle.runtime.ort_model import OrtCausalLM, session_options

# Ops that read a weight matrix when one of their inputs is an initializer, and the rank of the
# activation they are fed in isolation (Gemm takes 2-D inputs, the rest (batch, tokens, K)).
WEIGHT_OPS = {"MatMulNBits": 3, "MatMul": 3, "FusedMatMul": 3, "DynamicQuantizeMatMul": 3, "Gemm": 2}
GATHER_OPS = ("Gather", "GatherBlockQuantized")  # read one row per token: not a weight stream
ATTENTION_OPS = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "RotaryEmbedding", "Softmax")
# Node-name fragments (lower case) → module group, first match wins; the op type decides otherwise.
NAME_GROUPS = (
    ("lm_head", "lm_head"),
    ("embed", "embedding"),
    ("layernorm", "norms"),
    ("norm", "norms"),
    ("attn", "attention"),
    ("attention", "attention"),
    ("mlp", "mlp"),
    ("feed_forward", "mlp"),
)


def is_graph_model(model: Any) -> bool:
    """Whether ``model`` runs as an ONNX graph (an ``OrtCausalLM`` or a GenAI build)."""
    return isinstance(model, OrtCausalLM)


def group_of_node(name: str, op: str) -> str:
    """The module group of one graph node: by its name where the exporter wrote the module path."""
    low = name.lower()
    for fragment, group in NAME_GROUPS:
        if fragment in low:
            return group
    if op in ATTENTION_OPS:
        return "attention"
    if "LayerNormalization" in op:
        return "norms"
    return "other ops"


def node_modules(path: str | Path) -> dict[str, str]:
    """Node name → the module path it came from, where the exporter recorded one (torch.onnx's
    ``namespace`` metadata: ``.../model.model.layers.0.self_attn.q_proj: Linear/linear: aten.linear``);
    the GenAI builder writes the path into the node names themselves."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out = {}
    for node in proto.graph.node:
        space = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        modules = [part.split(":")[0] for part in space.split("/")[:-1]]
        out[node.name] = modules[-1] if modules and modules[-1] else node.name
    return out


def read_bytes(path: str | Path) -> float:
    """Bytes of initializers one decode step reads: all but tables only gathered from (a row each)."""
    import onnx

    return proto_read_bytes(onnx.load(str(path), load_external_data=False))


def proto_read_bytes(proto: Any) -> float:
    """``read_bytes`` of a loaded ``ModelProto``."""
    from onnx import helper

    readers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    total = 0
    for init in proto.graph.initializer:
        if readers.get(init.name, set()) <= set(GATHER_OPS):
            continue
        total += int(np.prod(init.dims)) * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return float(total)


# --- the phase, through ONNX Runtime's profiler ------------------------------------------------------


class _CountingSession:
    """An ORT session that counts its runs (to tell the measured window's runs from the warm-up's)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.runs = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@contextlib.contextmanager
def _profiling_session(model: OrtCausalLM, folder: Path) -> Iterator[_CountingSession]:
    """The model's graph in a fresh session with ORT's profiler on, swapped in for the duration."""
    import onnxruntime as ort

    model.session()  # the model's own session, built for the thread count in force
    saved = (model._session, model._session_threads)
    options = session_options(saved[1], model.optimization)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort")
    counting = _CountingSession(
        ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    )
    model._session = counting
    try:
        yield counting
    finally:
        model._session, model._session_threads = saved


def profile_graph_phase(
    phase: str,
    step: Callable[[], None],
    prepare: Callable[[], None] | None,
    session_step: Callable[[], None],
    session_prepare: Callable[[], None] | None,
    model: OrtCausalLM,
    repeats: int = 3,
    trace: str | None = None,
) -> PhaseProfile:
    """Time ``step`` through the model's own loop (best of ``repeats``), then profile the window once
    more in a plain ORT session (``session_step`` after ``session_prepare``) with ORT's profiler."""
    prep, session_prep = prepare or (lambda: None), session_prepare or (lambda: None)
    prep()
    step()  # warm-up
    walls = []
    for _ in range(repeats):
        prep()
        walls.append(_timed(step))
    with tempfile.TemporaryDirectory(prefix="unbottle-ort-profile-") as tmp:
        with _profiling_session(model, Path(tmp)) as session:
            session_prep()
            session_step()  # the fresh session's first runs allocate: not measured
            session_prep()
            first = session.runs
            profiled = _timed(session_step)
            measured = session.runs - first
            path = session.end_profiling()
        events = json.loads(Path(path).read_text(encoding="utf-8"))
        if trace:
            shutil.copyfile(path, trace)
    return summarise_events(phase, min(walls), profiled, events, measured, trace, node_modules(model.path))


def summarise_events(
    phase: str,
    wall: float,
    profiled: float,
    events: list[dict[str, Any]],
    measured: int,
    trace: str | None,
    modules: dict[str, str] | None = None,
) -> PhaseProfile:
    """A ``PhaseProfile`` from ORT's profile events, of the last ``measured`` graph runs; ``modules``
    (``node_modules``) names the module of each node the exporter recorded one for.

    Groups add up to ``wall``: kernel time per module group, ``graph overhead`` (the runs' time less
    their kernels) and ``other`` (the wall time outside the graph runs); when the profiled runs took
    longer than the unprofiled wall, the graph parts are scaled down to it and ``other`` is 0.
    """
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs = runs[len(runs) - measured :] if measured else []
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    groups: dict[str, float] = {}
    ops: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(lo <= e["ts"] <= hi for lo, hi in spans):
            continue
        op = e.get("args", {}).get("op_name", "?")
        seconds = e["dur"] / 1e6
        node = e["name"].removesuffix("_kernel_time")
        group = group_of_node((modules or {}).get(node, node), op)
        groups[group] = groups.get(group, 0.0) + seconds
        row = ops.setdefault(op, {"op": op, "shapes": _shapes(e), "calls": 0, "self_s": 0.0, "flops": 0.0})
        row["calls"] += 1
        row["self_s"] += seconds
    kernel = sum(groups.values())
    inside = sum(e["dur"] for e in runs) / 1e6
    groups["graph overhead"] = max(0.0, inside - kernel)
    scale = min(1.0, wall / inside) if inside else 1.0
    groups = {k: v * scale for k, v in groups.items()}
    groups["other"] = max(0.0, wall - inside * scale)
    return PhaseProfile(
        phase=phase,
        wall_s=wall,
        profiled_wall_s=profiled,
        kernel_s=kernel * scale,
        groups=groups,
        ops=sorted(ops.values(), key=lambda r: -r["self_s"])[:12],
        profiler_flops=0.0,
        trace=trace,
    )


def _shapes(event: dict[str, Any]) -> str:
    shapes = [list(s.values())[0] for s in event.get("args", {}).get("input_type_shape", []) if s]
    return str(shapes)[:80]
