"""Hotspots of one phase (prefill or decode) through ``torch.profiler``: by operator and by module group.

Module groups (embedding, attention, MLP, norms, lm_head) are marked by forward hooks that open a
profiler range around each module of the group; whatever the model's forward spends outside them
(sampling, cache bookkeeping, Python between modules) is reported as ``other``, so the groups and the
remainder always add up to the profiled wall time. *Kernel time* is the summed self time of the aten
operators (children excluded, so nothing counts twice) less each call's fixed cost, measured as the
self time of a one-element add; the rest of the wall time is Python, dispatch and per-op overhead.
Shares come from the profiled window and are applied to the unprofiled wall time, so the profiler's
own cost does not inflate them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.profiler import record_function

GROUP_PREFIX = "group::"
# A window shorter than this is profiled up to PROFILED_RUNS times and the fastest run kept: on a loaded
# machine one preemption inside an operator would otherwise read as kernel time.
SHORT_WINDOW_S = 0.1
PROFILED_RUNS = 5
STALL_FACTOR = 20  # a call this many times slower than its op's median at the same shapes was stalled
# Module names (last component) and class-name fragments that identify each group.
BY_NAME = {
    "embed_tokens": "embedding",
    "wte": "embedding",
    "self_attn": "attention",
    "attention": "attention",
    "attn": "attention",
    "mlp": "mlp",
    "feed_forward": "mlp",
    "input_layernorm": "norms",
    "post_attention_layernorm": "norms",
    "norm": "norms",
    "ln_f": "norms",
    "lm_head": "lm_head",
}
BY_CLASS = (("Embedding", "embedding"), ("Attention", "attention"), ("MLP", "mlp"), ("Norm", "norms"))


@dataclasses.dataclass
class PhaseProfile:
    """What one profiled window of a phase spent its time on (seconds)."""

    phase: str
    wall_s: float  # unprofiled wall time of the window (best of a few)
    profiled_wall_s: float
    kernel_s: float  # self time of leaf aten ops
    groups: dict[str, float]  # group → seconds (its share of the profiled window × wall), plus "other"
    ops: list[dict[str, Any]]  # top operators: name, shapes, calls, self seconds, flops
    profiler_flops: float
    trace: str | None = None

    @property
    def overhead_fraction(self) -> float:
        """Share of the unprofiled wall time not spent in leaf kernels (the profiler's own cost,
        which inflates the profiled wall, is left out)."""
        return max(0.0, 1.0 - self.kernel_s / self.wall_s) if self.wall_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "overhead_fraction": self.overhead_fraction}


def group_of(name: str, module: Any) -> str | None:
    last = name.rsplit(".", 1)[-1]
    if last in BY_NAME:
        return BY_NAME[last]
    cls = type(module).__name__
    return next((g for fragment, g in BY_CLASS if fragment in cls), None)


def install_group_ranges(model: Any) -> list[Any]:
    """Forward hooks that open and close a profiler range around each module of a group (outermost)."""
    handles, marked = [], []
    for name, module in model.named_modules():
        group = group_of(name, module) if name else None
        if group is None or any(name.startswith(m + ".") for m in marked):
            continue
        marked.append(name)
        stack: list[Any] = []

        def pre(_m, _args, group=group, stack=stack):
            rf = record_function(GROUP_PREFIX + group)
            rf.__enter__()
            stack.append(rf)

        def post(_m, _args, _out, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def profile_phase(
    phase: str,
    step: Callable[[], None],
    model: Any,
    repeats: int = 3,
    trace: str | None = None,
    prepare: Callable[[], None] | None = None,
    device: str = "cpu",
) -> PhaseProfile:
    """Time ``step`` unprofiled (best of ``repeats``), then profile one more call of it.

    ``prepare`` runs, untimed, before every call (e.g. a fresh KV cache filled with the prompt).
    """
    prep = prepare or (lambda: None)
    cuda = device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    prep()
    step()  # warm-up
    walls = []
    for _ in range(repeats):
        prep()
        walls.append(_timed(step, sync))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prep()  # a runtime's own cache (GenAI's) holds only the window's positions: refill it every call
    with torch.profiler.profile(activities=activities):  # the profiler's own first-use cost, discarded
        step()
    handles = install_group_ranges(model)
    try:
        profiled, prof = _least_disturbed(step, prep, sync, activities)
    finally:
        for h in handles:
            h.remove()
    if trace:
        prof.export_chrome_trace(trace)
    seen = {"events": prof.events(), "averages": prof.key_averages(group_by_input_shape=True)}
    return _summarise(phase, min(walls), profiled, seen["events"], seen["averages"], trace, cuda)


def _least_disturbed(
    step: Callable[[], None], prep: Callable[[], None], sync: Callable[[], None], activities: list[Any]
) -> tuple[float, Any]:
    """Profile ``step`` once, or, for a short window, a few times and keep the fastest run.

    One preemption of a few milliseconds inside an operator would count as kernel time and swamp a
    window of a few milliseconds on a loaded machine; a long window averages such noise out.
    """
    best: tuple[float, Any] | None = None
    spent = 0.0
    for _ in range(PROFILED_RUNS):
        prep()
        with torch.profiler.profile(activities=activities, record_shapes=True, with_flops=True) as prof:
            profiled = _timed(step, sync)
        spent += profiled
        if best is None or profiled < best[0]:
            best = (profiled, prof)
        if spent >= SHORT_WINDOW_S:
            break
    assert best is not None
    return best


def _timed(step: Callable[[], None], sync: Callable[[], None] = lambda: None) -> float:
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def _summarise(
    phase: str,
    wall: float,
    profiled: float,
    events: Any,
    averages: Any,
    trace: str | None,
    cuda: bool = False,
) -> PhaseProfile:
    floor_us = op_floor_us()
    if cuda:  # on a GPU the work is the device kernels; CPU-side op time is launch overhead
        device_us = sum(e.self_device_time_total for e in events if _on_device(e))
    groups: dict[str, float] = {}
    flops = 0.0
    for e in events:
        if e.name.startswith(GROUP_PREFIX):
            key = e.name.removeprefix(GROUP_PREFIX)
            groups[key] = groups.get(key, 0.0) + e.cpu_time_total / 1e6
        flops += getattr(e, "flops", 0) or 0
    kernel_us, stalled_us = _kernel_us([e for e in events if e.name.startswith("aten::")], floor_us)
    if cuda:
        kernel_us, stalled_us = device_us, 0.0
    groups["other"] = max(0.0, profiled - sum(groups.values()))
    scale = wall / max(profiled, sum(groups.values()))  # shares of the profiled window, in real seconds
    # The kernel share is taken of the window less the stalls, which were neither work nor overhead.
    undisturbed = max(profiled - stalled_us / 1e6, 1e-9)
    return PhaseProfile(
        phase=phase,
        wall_s=wall,
        profiled_wall_s=profiled,
        kernel_s=min(kernel_us / 1e6, undisturbed) * wall / undisturbed,
        groups={k: v * scale for k, v in groups.items()},
        ops=_top_ops(averages),
        profiler_flops=float(flops),
        trace=trace,
    )


def _kernel_us(events: list[Any], floor_us: float) -> tuple[float, float]:
    """Kernel microseconds of aten events, and the stalls left out of them.

    Self times never overlap (no double counting); each call's fixed cost (``floor_us``) is overhead.
    A call far slower than the median of its op at the same input shapes (``STALL_FACTOR``×, when there
    are at least 3 such calls) was preempted or stalled: the excess is neither work nor overhead.
    """
    by_kind: dict[tuple[str, str], list[float]] = {}
    for e in events:
        by_kind.setdefault((e.name, str(getattr(e, "input_shapes", ""))), []).append(e.self_cpu_time_total)
    kernel = stalled = 0.0
    for times in by_kind.values():
        cap = STALL_FACTOR * statistics.median(times) + floor_us if len(times) >= 3 else float("inf")
        for t in times:
            kernel += max(0.0, min(t, cap) - floor_us)
            stalled += max(0.0, t - cap)
    return kernel, stalled


def _on_device(event: Any) -> bool:
    kind = getattr(event, "device_type", None)
    return kind is not None and "CUDA" in str(kind)


_FLOOR: list[float] = []


def op_floor_us() -> float:
    """The fixed cost of one operator call as the profiler sees it (microseconds), measured once:
    the median self time of adding two one-element tensors. Time up to this per call is dispatch,
    not work."""
    if not _FLOOR:
        a, b = torch.ones(1), torch.ones(1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(300):
                torch.add(a, b)
        times = [e.self_cpu_time_total for e in prof.events() if e.name == "aten::add"]
        _FLOOR.append(statistics.median(times) if times else 0.0)
    return _FLOOR[0]


def _top_ops(averages: Any, limit: int = 12) -> list[dict[str, Any]]:
    rows = []
    for avg in averages:
        if avg.key.startswith((GROUP_PREFIX, "ProfilerStep")) or avg.self_cpu_time_total <= 0:
            continue
        rows.append(
            {
                "op": avg.key,
                "shapes": str(avg.input_shapes)[:80],
                "calls": avg.count,
                "self_s": avg.self_cpu_time_total / 1e6,
                "flops": float(getattr(avg, "flops", 0) or 0),
            }
        )
    rows.sort(key=lambda r: -r["self_s"])
    return rows[:limit]
