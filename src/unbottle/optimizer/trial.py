"""The worker side of a search: each function runs in its own process (``unbottle.optimizer.isolate``).

Every function takes a JSON payload and returns JSON. A trial loads the model, applies the
candidate's passes in place, measures the candidate's own peak memory while decoding, then loads
the baseline again and measures both interleaved (``run_ab``) and the candidate's accuracy on the
same windows and items the baseline was scored on, so every comparison is paired.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unbottle.benchmarking import apply_threads, check_positions
from unbottle.benchmarking.scenarios import decode_once, encode_once
from unbottle.benchmarking.timing import make_timer
from unbottle.benchmarking.tracker import ResourceTracker
from unbottle.comparison.ab import ABConfig, ABRounds, run_ab
from unbottle.comparison.accuracy import compare_evals
from unbottle.comparison.noise import noise_floor_from
from unbottle.comparison.speed import compare_rounds
from unbottle.core.naming import opt
from unbottle.data.prompts import make_prompts
from unbottle.evaluation import EvalConfig, EvalResult, evaluate
from unbottle.models import resolve
from unbottle.optimizer.candidates import candidates_from_payload
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.host import HostLoad
from unbottle.optimizer.isolate import run_isolated
from unbottle.optimizer.sensitivity import layer_sensitivity
from unbottle.passes import apply_
from unbottle.passes.recipe import apply_and_save
from unbottle.passes.sizes import model_size
from unbottle.sources.gguf_file import CONVERTED_NOTE
from unbottle.stats import Estimate, MetricComparison, verdict_of

FAULT_ENV = "UNBOTTLE_INJECT_FAULT"


def baseline(payload: dict[str, Any]) -> dict[str, Any]:
    """Measure the baseline: accuracy at both stages, its own memory and size, an A-vs-A screen of two
    copies, and the cores other processes kept busy meanwhile (``host``; ``unbottle.optimizer.host``).

    Each part is timed (``load_s`` the first load, imports included; ``reload_s`` a second one;
    ``eval_s``; ``screen_ab_s``) so the search can price its later trials (``unbottle.optimizer.plan``).
    """
    cfg = OptimizeConfig.from_dict(payload["config"])
    threads = apply_threads(cfg.threads)
    with HostLoad() as load:
        start = time.perf_counter()
        loaded = load_model(cfg.model)
        load_s = time.perf_counter() - start
        longest = cfg.prompt_length + (0 if cfg.is_encoder() else cfg.new_tokens)
        check_positions(loaded, longest, f"give a shorter {opt('workload')}")
        converted = any(n.startswith(CONVERTED_NOTE) for n in loaded.info.notes)  # a GGUF's first load
        own = fresh_resources(cfg, cfg.model) if converted else own_resources(loaded, cfg, [])
        evals, eval_s = {}, {}
        for stage in ("screen", "full", "held_out"):
            t = time.perf_counter()
            evals[stage] = [r.to_dict() for r in _evaluate(loaded, cfg, stage, reference=loaded)]
            eval_s[stage] = time.perf_counter() - t
        t = time.perf_counter()
        again = load_model(cfg.model)  # a second copy, as every trial's A/B loads one
        reload_s = time.perf_counter() - t
        t = time.perf_counter()
        rounds = run_ab(loaded, again, ABConfig(**cfg.ab_settings("screen")))
        ab_s = time.perf_counter() - t
    cmps = compare_rounds(rounds)
    host = load.result
    if injected("busy", "baseline"):  # testing: as if other processes held every core
        host = {**host, "others_cores": float(host["cpus"]), "injected": "busy"}
    return {
        "model": loaded.info.to_dict(),
        "threads": threads,
        "load_s": load_s,
        "reload_s": reload_s,
        "evals": evals,
        "eval_s": eval_s,
        "screen_ab_s": ab_s,
        "rates": {k: sorted(v)[len(v) // 2] for k, v in rounds.a.items()},
        "screen_noise_pct": {k: abs(v.pct.ci_high - v.pct.ci_low) / 2 for k, v in cmps.items()},
        "screen_noise_floor_pct": noise_floor_from(cmps),
        "host": host,
        **own,
    }


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    """Screen or fully measure one candidate against the baseline (``payload['stage']``)."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    stage = payload["stage"]
    inject_fault(payload["key"])
    cand, reports, apply_s = _applied(cfg, payload["passes"])
    _slow_down(cand, slowed(payload["key"]))
    own = own_resources(cand, cfg, reports)
    timed = cfg.objective_spec()[0] is not None
    # the A/B's side and an encoder's reference, loaded once
    base = _ab_baseline(cfg) if timed or cfg.is_encoder() else None
    speed, order = _speed(cfg, cand, stage, base) if timed else ({}, [])
    base_evals = [EvalResult.from_dict(d) for d in payload["base_evals"]]
    cand_evals = _evaluate(cand, cfg, stage, base)
    comparisons = {**speed, **compare_evals(*paired_samples(base_evals, cand_evals))}
    comparisons.update(_own_comparisons(payload["base_own"], own))
    return {
        "stage": stage,
        "apply_s": apply_s,
        "reports": [r.to_dict() for r in reports],
        "comparisons": {k: v.to_dict() for k, v in comparisons.items()},
        "evals": {r.metric: r.value for r in cand_evals},
        "order": order,
        **own,
    }


def verify(payload: dict[str, Any]) -> dict[str, Any]:
    """Save the winner with its recipe, reload it from disk, and A/B it against the baseline in full."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    _threads(cfg)
    out = Path(payload["output"])
    base = load_model(cfg.model)
    configs = candidates_from_payload(payload["passes"])
    recipe, final = apply_and_save(base, configs, cfg.model, out, overwrite=True, search=payload["search"])
    del final, base
    own = fresh_resources(cfg, str(out))
    saved = resolve(str(out)).load()
    if injected("worse", payload["key"]):
        _make_worse(saved)
    base = _ab_baseline(cfg)
    base_evals = [EvalResult.from_dict(d) for d in payload["base_evals"]]
    evals: dict[str, list[Any]] = {}

    def between_blocks() -> None:  # the evaluations separate the speed blocks in time
        evals["held_out"] = _evaluate(saved, cfg, "held_out", base)  # out of sample: no earlier trial read it
        evals["full"] = _evaluate(saved, cfg, "full", base)  # the selection part: reproduces the finalist's

    blocked = _blocked_ab(base, saved, cfg.ab_settings("full"), between_blocks)
    comparisons = {k: v for rounds in blocked for k, v in compare_rounds(rounds).items()}
    rounds, saved_evals, held_out = blocked[0], evals["full"], evals["held_out"]
    comparisons.update(compare_evals(*paired_samples(base_evals, held_out)))
    comparisons.update(_own_comparisons(payload["base_own"], own))
    return {
        **own,
        "output": str(out),
        "recipe": {"baked": recipe.baked, "onnx": recipe.onnx, "reports": recipe.reports},
        "comparisons": {k: v.to_dict() for k, v in comparisons.items()},
        "rounds": {"a": rounds.a, "b": rounds.b, "order": rounds.order, "blocks": rounds.blocks},
        "evals": [r.to_dict() for r in saved_evals],
        "held_out_evals": [r.to_dict() for r in held_out],
    }


def block_sizes(rounds: int) -> list[int]:
    """Verification's rounds in two blocks (the first the larger) once each can have the 3 an A/B
    needs; fewer stay one block."""
    return [rounds] if rounds < 6 else [rounds - rounds // 2, rounds // 2]


def _blocked_ab(
    base: Any, saved: Any, settings: dict[str, Any], between: Callable[[], None]
) -> list[ABRounds]:
    """Every phase of the request (the objective's scenario, and decode beside it; an encoder's batch
    has one phase) in blocks of rounds
    with ``between`` run in the gap (after them when there is one block); one ``ABRounds`` per
    scenario, its blocks joined."""
    scenarios = [settings["scenario"]] + (
        ["decode"] if settings["scenario"] not in ("decode", "encode") else []
    )
    parts: dict[str, list[ABRounds]] = {s: [] for s in scenarios}
    sizes = block_sizes(settings["rounds"])
    for i, size in enumerate(sizes):
        if i:
            between()
        for scenario in scenarios:
            config = ABConfig(**{**settings, "scenario": scenario, "rounds": size})
            parts[scenario].append(run_ab(base, saved, config))
    if len(sizes) == 1:
        between()
    return [ABRounds.joined(p) for p in parts.values()]


def sensitivity(payload: dict[str, Any]) -> dict[str, Any]:
    """Per-layer sensitivity of one quantization (see ``unbottle.optimizer.sensitivity``)."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    _threads(cfg)
    loaded = load_model(cfg.model)
    configs = candidates_from_payload(payload["passes"])
    scores, proxy = layer_sensitivity(loaded, configs, seed=cfg.seed)
    return {"scores": scores, "proxy": proxy}


def load_model(spec: str) -> Any:
    """The model a search tunes: a causal LM, or an encoder (``OptimizeConfig.model_task``)."""
    return resolve(spec).load()


def resources(payload: dict[str, Any]) -> dict[str, Any]:
    """``own_resources`` of ``payload['model']`` (a spec or a saved folder) in this fresh process."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    _threads(cfg)
    return own_resources(load_model(payload["model"]), cfg, [])


def fresh_resources(cfg: OptimizeConfig, model: str) -> dict[str, Any]:
    """A model's weights and peak memory measured in a process that only loads it and decodes, so
    the figure describes the model, not what the measuring process did before (conversions,
    copies, freed memory the allocator kept)."""
    outcome = run_isolated(
        f"{__name__}:resources", {"config": cfg.to_dict(), "model": model}, cfg.trial_timeout_s
    )
    if outcome.status != "ok":
        raise RuntimeError(
            f"measuring the memory of {model} in a fresh process: {outcome.status}, {outcome.reason}"
        )
    return outcome.result


def own_resources(loaded: Any, cfg: OptimizeConfig, reports: list[Any]) -> dict[str, Any]:
    """This model's weight bytes and its peak resident memory over one decode (an encoder: one
    encoded batch), nothing else loaded."""
    gc.collect()
    model = loaded.model
    prompt = make_prompts(
        loaded.tokenizer, model.config.vocab_size, cfg.batch_size, cfg.prompt_length, cfg.seed
    )
    with ResourceTracker() as tracker:
        if cfg.is_encoder():
            encode_once(model, prompt, make_timer("cpu"))
        else:
            decode_once(model, prompt, min(cfg.new_tokens, 16), make_timer("cpu"))
    if reports:
        weights = reports[-1].bytes_after
    elif getattr(model, "stored_bytes", None) is not None:  # an ONNX Runtime model: its graph's weights
        weights = model.stored_bytes
    else:
        weights = model_size(model)[1]
    return {"weights_mib": weights / 2**20, "peak_rss_mib": tracker.peak_rss_bytes / 2**20}


def _applied(cfg: OptimizeConfig, passes: list[dict[str, Any]]) -> tuple[Any, list[Any], float]:
    _threads(cfg)
    loaded = load_model(cfg.model)
    start = time.perf_counter()
    cand, reports = apply_(loaded, candidates_from_payload(passes), copy_model=False)
    del loaded
    return cand, reports, time.perf_counter() - start


def _speed(cfg: OptimizeConfig, cand: Any, stage: str, base: Any) -> tuple[dict[str, Any], list[str]]:
    """Interleaved rounds against ``base``, a freshly loaded baseline (``_ab_baseline``)."""
    settings = cfg.ab_settings(stage)
    if stage == "final":
        settings["rounds"] = max(cfg.screen_rounds, cfg.full_rounds // 2)
    rounds = run_ab(base, cand, ABConfig(**settings))
    return compare_rounds(rounds), rounds.order


def _ab_baseline(cfg: OptimizeConfig) -> Any:
    """The baseline a candidate's rounds run against (slowed when a test asks, ``slow:baseline``)."""
    base = load_model(cfg.model)
    _slow_down(base, slowed("baseline"))
    return base


def paired_samples(base: list[Any], cand: list[Any]) -> tuple[list[Any], list[Any]]:
    """Both sides restricted to the samples both scored.

    The baseline is evaluated at the configured sizes; a plan that shrank the evaluation scores the
    candidate on fewer tokens of the same text, whose windows are the baseline's first ones (the last,
    shorter window aside), so the comparison stays paired window by window.
    """
    by_metric = {r.metric: r for r in cand}
    out_a, out_b = [], []
    for a in base:
        b = by_metric.get(a.metric)
        if b is None or a.sample_ids == b.sample_ids:
            out_a.append(a)
            out_b.extend([b] if b is not None else [])
            continue
        common = set(a.sample_ids) & set(b.sample_ids)
        out_a.append(_subset(a, common))
        out_b.append(_subset(b, common))
    return out_a, out_b


def _subset(r: Any, ids: set[str]) -> Any:
    keep = [i for i, s in enumerate(r.sample_ids) if s in ids]
    return dataclasses.replace(
        r,
        scores=[r.scores[i] for i in keep],
        sample_ids=[r.sample_ids[i] for i in keep],
        weights=None if r.weights is None else [r.weights[i] for i in keep],
    )


def _evaluate(loaded: Any, cfg: OptimizeConfig, stage: str, reference: Any = None) -> list[Any]:
    """``stage``: ``screen``, ``held_out``, or anything else for the full selection part.
    ``reference``: the float model an encoder's embeddings are compared with (a causal LM's
    perplexity needs none)."""
    settings = EvalConfig(**cfg.eval_settings(stage if stage in ("screen", "held_out") else "full"))
    return evaluate(loaded, settings, reference_loaded=reference if cfg.is_encoder() else None)


def _own_comparisons(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Size and peak memory as comparisons (one measurement each side: the CI is the point)."""
    out = {}
    for metric, key in (("size.weights", "weights_mib"), ("memory.peak_rss", "peak_rss_mib")):
        a, b = base[key], own[key]
        one = lambda v, what: Estimate(v, v, v, 0.95, 1, what)  # noqa: E731
        pct = one(100 * (b / a - 1), "single measurement")
        out[metric] = MetricComparison(
            metric,
            "MiB",
            False,
            one(a, "measured"),
            one(b, "measured"),
            one(b - a, "difference"),
            pct,
            verdict_of(pct, False),
        )
    return out


def _threads(cfg: OptimizeConfig) -> None:
    apply_threads(cfg.threads)


def inject_fault(key: str) -> None:
    """Testing hook: ``UNBOTTLE_INJECT_FAULT="segfault:wo-int8;oom:precision"`` makes the trial of
    any candidate whose key contains the text crash that way (segfault, oom, hang, raise).

    More kinds change a measurement instead (``injected``): ``slow:KEY`` makes that candidate
    (``slow:baseline``: the baseline its rounds run against) sleep ``SLOW_S`` before every forward
    call (``slower:KEY``: ``SLOWER_S``), ``worse:KEY`` makes its verified copy inaccurate,
    ``busy:baseline`` makes the baseline report every core held by other processes.
    """
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(";")):
        kind, _, text = item.partition(":")
        if text and text in key:
            _fault(kind)


def injected(kind: str, key: str) -> bool:
    """Whether ``UNBOTTLE_INJECT_FAULT`` asks for ``kind`` on the trial ``key``."""
    items = (item.partition(":") for item in os.environ.get(FAULT_ENV, "").split(";"))
    return any(k == kind and text and text in key for k, _, text in items)


SLOW_S = 0.02
SLOWER_S = 0.1  # ``slower:KEY``: for models whose forward a loaded host stretches past SLOW_S


def slowed(key: str) -> float:
    """Seconds ``UNBOTTLE_INJECT_FAULT`` asks the trial ``key`` to sleep before every forward (0: none)."""
    return SLOWER_S if injected("slower", key) else SLOW_S if injected("slow", key) else 0.0


def _slow_down(loaded: Any, seconds: float) -> None:
    """Testing: every forward call of a torch model sleeps ``seconds`` first (many times a tiny model's
    decode step, so the candidate is far slower on any host under any load); 0 leaves it as it is."""
    if not seconds:
        return
    stack = getattr(loaded.model, "base_model", loaded.model)  # what decode steps and encodes both call
    stack.register_forward_pre_hook(lambda _module, _args: time.sleep(seconds))


def _make_worse(loaded: Any) -> None:
    """Testing (``worse:KEY``, verification only): the pad token's logit raised by 20 everywhere, so
    every real token's probability collapses and the accuracy guard fails on any model."""
    pad = loaded.model.config.pad_token_id or 0

    def hook(_module: Any, _args: Any, out: Any) -> Any:
        out.logits[..., pad] += 20.0
        return out

    loaded.model.register_forward_hook(hook)


def _fault(kind: str) -> None:
    if kind == "segfault":
        ctypes.string_at(0)
    elif kind == "oom":
        hog = []
        while True:
            hog.append(b"\x01" * (64 * 2**20))  # written pages: resident, unlike calloc'd zeros
    elif kind == "hang":
        time.sleep(10**6)
    elif kind == "raise":
        raise RuntimeError("injected failure")
