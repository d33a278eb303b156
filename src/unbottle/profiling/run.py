"""``profile_model``: peaks, hotspots per phase, roofline, diagnosis, as one stored document."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unbottle.benchmarking.config import check_threads
from unbottle.core.config import Config
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.data.prompts import make_prompts
from unbottle.passes.sizes import model_size
from unbottle.profiling.diagnose import diagnose
from unbottle.profiling.graph_ceiling import measure_ceiling
from unbottle.profiling.graph_profile import is_graph_model, profile_graph_phase, read_bytes
from unbottle.profiling.hotspots import profile_phase
from unbottle.profiling.roofline import decode_ceiling_bandwidths, decode_ceilings, phase_work, roofline
from unbottle.runtime.caches import cache_keyword, forward_kwargs, new_cache


@dataclasses.dataclass(frozen=True)
class ProfileConfig(Config):
    """What to profile.

    Attributes:
        prompt_length: tokens of the prefill window (batch 1).
        decode_tokens: decode steps in the profiled decode window (after a ``prompt_length`` prompt).
        threads: torch threads; None: the physical cores.
        trace_dir: folder for the Chrome/Perfetto traces; None: no trace files.
        refresh_peaks: re-measure the machine peaks even if stored ones match.
        seed: prompt selection.
        device: ``cpu`` or ``cuda[:i]`` (CUDA: kernel time from the profiler's device events, wall
            times after a synchronize).
    """

    prompt_length: int = 128
    decode_tokens: int = 16
    threads: int | None = None
    trace_dir: str | None = None
    refresh_peaks: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_length, int) or self.prompt_length < 8:
            raise ConfigError(
                f"{given('prompt_length', self.prompt_length, quote=True)} given; a prefill window shorter "
                "than 8 tokens is too short to see the phase: use 8 or more"
            )
        if not isinstance(self.decode_tokens, int) or self.decode_tokens < 4:
            raise ConfigError(
                f"{given('decode_tokens', self.decode_tokens, quote=True)} given; fewer than 4 decode steps "
                "are too short to see the phase: use 4 or more"
            )
        if self.threads is not None:
            check_threads(self.threads)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"{given('device', self.device, quote=True)} given; allowed: cpu, cuda, cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"{given('device', self.device)} given but no CUDA GPU is visible; "
                f"use {given('device', 'cpu')}"
            )


def trace_paths(trace_dir: str | None, label: str) -> dict[str, str | None]:
    """Where each phase's trace goes; checks the folder is writable before anything runs."""
    if trace_dir is None:
        return {"prefill": None, "decode": None}
    folder = Path(trace_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".unbottle-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{given('trace_dir', trace_dir, '--trace', quote=True)}: cannot write there ({exc.strerror}); "
            "choose a writable folder"
        ) from None
    return {phase: str(folder / f"{label}-{phase}.trace.json") for phase in ("prefill", "decode")}


def profile_model(loaded: Any, config: ProfileConfig, peaks: Any, label: str = "profile") -> dict[str, Any]:
    """Profile prefill and decode of a loaded causal LM against ``peaks``; return the document."""
    model = loaded.model.to(config.device)
    traces = trace_paths(config.trace_dir, label)
    graph = is_graph_model(model)
    steps = _steps(loaded, config)
    session_steps = _steps(loaded, config, session=True) if graph else {}
    params, weight_bytes = model_size(model)
    if graph:  # a gathered embedding table is read a row at a time, not streamed
        weight_bytes = int(read_bytes(model.path))
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    phases, rows = {}, {}
    for phase, (step, prepare, tokens, context) in steps.items():
        if graph:
            session_step, session_prepare = session_steps[phase][:2]
            prof = profile_graph_phase(
                phase, step, prepare, session_step, session_prepare, model, trace=traces[phase]
            )
        else:
            prof = profile_phase(
                phase, step, model, trace=traces[phase], prepare=prepare, device=config.device
            )
        work = phase_work(model, phase, tokens, context, weight_bytes)
        phases[phase] = {**prof.to_dict(), **work}
        rows[phase] = roofline(prof, work, peaks, dtype, tokens)
        rows[phase].update(bytes_per_param=weight_bytes / params, engine="onnxruntime" if graph else "torch")
    engine = _engine_ceiling(model, config, rows["decode"]) if graph else None
    kv_per_token = (
        rows["decode"]["gbytes"] * 1e9 - weight_bytes * config.decode_tokens
    ) / config.decode_tokens
    ceilings = decode_ceilings(params, kv_per_token, peaks)
    bandwidths = decode_ceiling_bandwidths(params, kv_per_token, peaks)
    request = {"prompt_tokens": config.prompt_length, "new_tokens": 64}
    groups = {p: phases[p]["groups"] for p in phases}
    return {
        "peaks": peaks.to_dict(),
        "phases": phases,
        "roofline": rows,
        "decode_ceilings": ceilings,
        "decode_ceiling_bandwidths": bandwidths,
        "weights": {"params": params, "bytes": weight_bytes, "dtype": dtype},
        "diagnosis": diagnose(rows, groups, peaks, ceilings, request, bandwidths, engine),
        "engine_ceiling": engine,
        "request": request,
        "traces": [t for t in traces.values() if t],
    }


def _engine_ceiling(model: Any, config: ProfileConfig, decode: dict[str, Any]) -> dict[str, Any]:
    """``measure_ceiling`` at the profile's context, with the decode wall per token beside it."""
    threads = model.threads or torch.get_num_threads()
    ceiling = measure_ceiling(model, config.prompt_length + config.decode_tokens // 2, threads)
    return {**ceiling, "wall_s_per_token": decode["wall_s"] / decode["tokens"], "threads": threads}


def _steps(loaded: Any, config: ProfileConfig, session: bool = False) -> dict[str, tuple[Any, Any, int, int]]:
    """(step, prepare, tokens, context) for prefill and decode; ``session``: decode with a
    ``DynamicCache``, which a graph model runs in its plain ONNX Runtime session."""
    from transformers import DynamicCache

    model = loaded.model
    prompt = make_prompts(loaded.tokenizer, model.config.vocab_size, 1, config.prompt_length, config.seed)
    prompt = prompt.to(config.device)
    kw = forward_kwargs(model)
    state: dict[str, Any] = {}

    def prefill() -> None:
        with torch.inference_mode():
            model(input_ids=prompt, use_cache=False, **kw)

    def prepare_decode() -> None:
        with torch.inference_mode():
            length = config.prompt_length + config.decode_tokens + 1
            cache = DynamicCache(config=model.config) if session else new_cache(model, length)
            out = model(input_ids=prompt, use_cache=True, **{**kw, cache_keyword(model): cache})
            state["cache"], state["token"] = cache, out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def decode() -> None:
        token = state["token"]
        with torch.inference_mode():
            for _ in range(config.decode_tokens):
                out = model(input_ids=token, use_cache=True, **{**kw, cache_keyword(model): state["cache"]})
                token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    return {
        "prefill": (prefill, None, config.prompt_length, 0),
        "decode": (decode, prepare_decode, config.decode_tokens, config.prompt_length),
    }
