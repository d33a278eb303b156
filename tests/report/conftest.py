"""Stored runs of every kind for the report tests, built in a private store in well under a second.

Statistics go through the real code (A/B rounds → ``compare_rounds``, paired perplexity →
``compare_eval``, documents → ``comparison_document``), only the raw samples are synthetic, so the
reports read exactly the shapes real runs store. No model is loaded and no search is run.
"""

from __future__ import annotations

import numpy as np
import pytest

from unbottle.comparison.ab import ABConfig, ABRounds
from unbottle.comparison.accuracy import compare_eval
from unbottle.comparison.document import comparison_document
from unbottle.comparison.speed import compare_rounds
from unbottle.core.env import manifest
from unbottle.core.measurement import Measurement
from unbottle.evaluation import EvalResult
from unbottle.optimizer import judge
from unbottle.stats import Goal
from unbottle.store import Store

MODEL = {"spec": "tiny-llama", "architecture": "llama", "n_parameters": 139584, "dtype": "float32"}
THREADS = {"torch_num_threads": 1, "torch_num_interop_threads": 1}
GUARD = "perplexity:percent-max-degradation=1"
DIAGNOSIS = [
    {
        "bound": "communication",
        "share": 0.43,
        "text": "43% of each step has gradients in flight",
        "try": ["--grad-accum 2", "--parallel fsdp"],
    }
]


def rounds(a_ms: float, b_ms: float, n: int = 6, seed: int = 0) -> ABRounds:
    """Interleaved decode rounds: B's token latency around ``b_ms``, A's around ``a_ms``."""
    rng = np.random.default_rng(seed)
    sides = {}
    for side, ms in (("a", a_ms), ("b", b_ms)):
        lat = (ms * (1 + 0.03 * rng.standard_normal(n))) / 1e3
        sides[side] = {
            "decode.token_latency": lat.tolist(),
            "decode.ttft": (lat * 4 * (1 + 0.05 * rng.standard_normal(n))).tolist(),
            "decode.tokens_per_s": (1.0 / lat).tolist(),
        }
    return ABRounds(ABConfig(rounds=n), sides["a"], sides["b"], ["AB", "BA"] * (n // 2))


def perplexity(shift: float, seed: int = 0) -> EvalResult:
    rng = np.random.default_rng(seed)
    scores = (
        3.5 + 0.2 * np.random.default_rng(1).standard_normal(9) + shift * (1 + 0.1 * rng.random(9))
    ).tolist()
    return EvalResult(
        evaluator="perplexity",
        metric="perplexity",
        value=float(np.exp(np.mean(scores))),
        higher_is_better=False,
        score_name="window_nll",
        score_unit="nats/token",
        scores=scores,
        sample_ids=[f"tokens[{i * 511}:{i * 511 + 512}]" for i in range(9)],
        weights=[511.0] * 9,
        seconds=1.5,
        details={"eval_tokens": 4096, "window": 512, "stride": 512},
    )


def comparisons(a_ms: float, b_ms: float, ppl_shift: float, seed: int = 0) -> dict:
    cmps = compare_rounds(rounds(a_ms, b_ms, seed=seed))
    cmps["perplexity"] = compare_eval(perplexity(0.0), perplexity(ppl_shift, seed))
    return cmps


def _start(store: Store, kind: str, model: str, config: dict, argv: list[str] | None = None) -> int:
    return store.start_run(kind, model, config, manifest(seed=0), argv=argv)


def bench_run(store: Store) -> int:
    rng = np.random.default_rng(0)
    run = _start(store, "bench", "tiny-llama", {"type": "BenchConfig", "version": 1, "batch_sizes": [1, 2]})
    for b in (1, 2):
        params = {"batch_size": b, "prompt_length": 8, "new_tokens": 4}
        lat = (0.004 * b * (1 + 0.1 * rng.random(12))).tolist()
        store.add_measurement(run, Measurement("decode.token_latency", "s", lat, False, "decode", params))
        store.add_measurement(
            run, Measurement("decode.ttft", "s", [x * 3 for x in lat], False, "decode", params)
        )
        tps = [b / x for x in lat]
        store.add_measurement(
            run, Measurement("decode.tokens_per_s", "tokens/s", tps, True, "decode", params)
        )
    store.finish_run(run, "complete", result={"model": MODEL, "threads": THREADS, "notes": []})
    return run


def eval_run(store: Store) -> int:
    run = _start(store, "eval", "tiny-llama", {"type": "EvalConfig", "version": 1, "eval_tokens": 4096})
    store.finish_run(
        run, "complete", result={"model": MODEL, "threads": THREADS, "evals": [perplexity(0).to_dict()]}
    )
    return run


def ab_run(store: Store, model_b: str = "tiny-llama-int8") -> int:
    r = rounds(10.0, 6.0)
    config = {
        "model_a": "tiny-llama",
        "model_b": model_b,
        "ab": r.config.to_dict(),
        "eval": None,
        "goals": [],
    }
    run = _start(store, "ab", f"tiny-llama vs {model_b}", config)
    for m in r.to_measurements():
        store.add_measurement(run, m)
    doc = comparison_document(compare_rounds(r), [], "tiny-llama", model_b, order=r.order)
    store.finish_run(run, "complete", result={"comparison": doc, "model": MODEL, "threads": THREADS})
    return run


def optimize_doc(store: Store, key: str = "search-0001", output: str = "/tmp/optimized/tiny-llama") -> dict:
    """A finished search: three screened candidates (one breaks the guard), a finalist, a verified winner.

    Its trials are recorded in ``store`` under ``key``, as the search records them.
    """
    plan = [
        ("screen", "wo-int8", 10.0, 5.5, 0.3),
        ("screen", "wo-int4:group_size=32", 10.0, 4.0, 9.0),
        ("screen", "compile", 10.0, 9.0, 0.0),
        ("final", "wo-int8", 10.0, 5.8, 0.4),
        ("verify", "wo-int8", 10.0, 5.7, 0.4),
    ]
    goals = [Goal.parse(GUARD)]
    rows, points = [{"key": "baseline", "stage": "baseline", "status": "ok", "seconds": 3.0}], []
    for i, (stage, cand, a_ms, b_ms, shift) in enumerate(plan):
        cmps = {k: v.to_dict() for k, v in comparisons(a_ms, b_ms, shift / 100, seed=i).items()}
        trial = {"key": f"{stage}:{cand}", "stage": stage, "candidate": {"key": cand}, "status": "ok"}
        store.record_trial(key, trial["key"], {**trial, "result": {"comparisons": cmps}, "seconds": 4.0})
        guard = judge.guard(goals, cmps, on_point=stage == "screen")
        row = {**trial, "candidate": cand, "gain": judge.gain(cmps["decode.tokens_per_s"]), "seconds": 4.0}
        row.update(accuracy=judge.accuracy_change(cmps), weights_mib=0.2, guard_passed=guard["passed"])
        row["explanation"] = [] if guard["passed"] else ["perplexity changed too much on the screening text"]
        rows.append(row)
        points.append(
            {
                "key": cand,
                "gain": row["gain"][0],
                "loss": judge.degradation(row["accuracy"]),
                "weights_mib": 0.2,
                "stage": stage,
                "guard_passed": guard["passed"],
            }
        )
    points = [{"key": "baseline", "gain": 1.0, "loss": 0.0, "weights_mib": 0.53}] + list(
        {p["key"]: p for p in points}.values()
    )
    final = rounds(10.0, 5.7, seed=4)
    verification = comparison_document(comparisons(10.0, 5.7, 0.004, seed=4), goals, "tiny-llama", "wo-int8")
    winner = rows[-1]
    doc = {
        "search_key": key,
        "model": "tiny-llama",
        "objective": {"name": "decode", "metric": "decode.tokens_per_s", "what": "decode tokens/s"},
        "guard": [GUARD],
        "baseline": {"weights_mib": 0.53, "model": MODEL, "threads": THREADS},
        "trials": rows,
        "skipped": {"onnx": "onnxruntime cannot run here"},
        "not_tried": {"lowrank": "the time budget ran out"},
        "resumed_trials": 0,
        "pareto": {"points": points, "front": judge.pareto_front(points)},
        "winner": {
            "key": "wo-int8",
            "gain": winner["gain"],
            "accuracy": winner["accuracy"],
            "guard_passed": True,
        },
        "verification": verification,
        "output": output,
        "rounds": {"a": final.a, "b": final.b, "order": final.order},
        "elapsed_s": 40.0,
        "time_budget_s": 60.0,
        "verdict": f"wo-int8: decode tokens/s ×{winner['gain'][0]:.2f} (95% CI, verified); guard met",
        "outcome": "goal-met",
        "saved_as": "winner" if output else None,
    }
    return doc


def optimize_run(store: Store) -> int:
    doc = optimize_doc(store)
    key = doc["search_key"]
    final = ABRounds(ABConfig(rounds=6), doc["rounds"]["a"], doc["rounds"]["b"], doc["rounds"]["order"])
    config = {
        "type": "OptimizeConfig",
        "version": 1,
        "model": "tiny-llama",
        "objective": "decode",
        "time_budget_s": 60.0,
        "output": "/tmp/optimized/tiny-llama",
        "search_key": key,
    }
    run = _start(
        store, "optimize", "tiny-llama", config, argv=["/venv/bin/unbottle", "optimize", "tiny-llama"]
    )
    for m in final.to_measurements():
        store.add_measurement(run, m)
    store.finish_run(run, "complete", result={"optimize": doc, "model": MODEL, "threads": THREADS})
    return run


def profile_run(store: Store) -> int:
    def phase(wall: float, scale: float) -> dict:
        groups = {"mlp": 0.5 * wall, "attention": 0.3 * wall, "norms": 0.1 * wall, "other": 0.1 * wall}
        op = {
            "op": "aten::mm",
            "shapes": "[[8, 64], [64, 256]]",
            "calls": 4,
            "self_s": wall / 3,
            "flops": 1e6,
        }
        return {"wall_s": wall, "groups": groups, "ops": [op], "kernel_s": 0.8 * wall, "flops": 1e8 * scale}

    def point(intensity: float, gflops: float, bound: str) -> dict:
        return {
            "tokens_per_s": 500.0,
            "achieved_gflops": gflops,
            "achieved_gbps": gflops / intensity,
            "intensity": intensity,
            "ridge": 3.6,
            "mfu": gflops / 94,
            "mbu": gflops / intensity / 26,
            "overhead_fraction": 0.2,
            "bound": bound,
        }

    finding = {
        "phase": "decode",
        "bound": "memory-bound",
        "cost_s": 0.01,
        "text": "decode is memory-bound",
        "recommendations": [{"candidate": "wo-int8", "why": "int8 weights", "gain": 3.5}],
    }
    doc = {
        "peaks": {
            "threads": 1,
            "bandwidth_gbps": 26.0,
            "matmul_gflops": {"float32": 94.0, "int8": 430.0},
            "measured_at": "2026-01-01T00:00:00Z",
        },
        "phases": {"prefill": phase(0.02, 10), "decode": phase(0.05, 1)},
        "roofline": {
            "prefill": point(40.0, 60.0, "compute-bound"),
            "decode": point(0.5, 5.0, "memory-bound"),
        },
        "decode_ceilings": {"float32": 48.0, "int8": 165.0},
        "diagnosis": {"findings": [finding]},
        "traces": [],
    }
    run = _start(store, "profile", "tiny-llama", {"type": "ProfileConfig", "version": 1, "prompt_length": 16})
    store.finish_run(run, "complete", result={"profile": doc, "model": MODEL, "threads": THREADS})
    return run


def train_run(store: Store, extra_step_keys: tuple[str, ...] = (), extra: dict | None = None) -> int:
    parts = ("data_s", "forward_s", "backward_s", "optimizer_s", *extra_step_keys)
    history = [
        {
            "step": s,
            "loss": 6.2 - 0.05 * s,
            "wall_s": 0.009,
            "tokens_per_s": 14000.0,
            **dict.fromkeys(parts, 0.002),
        }
        for s in range(1, 9)
    ]
    summary = {
        "steps": 8,
        "tokens_per_s": 14000.0,
        "step_s": 0.009,
        "first_loss": 6.15,
        "last_loss": 5.8,
        "breakdown": {"data_s": 0.1, "forward_s": 0.4, "backward_s": 0.4, "optimizer_s": 0.1},
        "mfu": 0.2,
        "peak_gflops": 94.0,
        "peak_dtype": "float32",
        "peak_rss_mib": 800.0,
    }
    result = {
        "summary": summary,
        "history": history,
        "model": MODEL,
        "threads": THREADS,
        "validation": [{"step": 8, "val_loss": 5.9, "val_perplexity": 365.0}],
        **(extra or {}),
    }
    config = {"model": "tiny-llama", "seq_len": 32, "train": {"max_steps": 8}, "loader": {"batch_size": 4}}
    run = _start(store, "train", "tiny-llama", config)
    store.finish_run(run, "complete", result=result)
    return run


def train_compare_run(store: Store) -> int:
    base = compare_rounds(rounds(10.0, 8.0))["decode.tokens_per_s"].to_dict()
    strategies = {
        "naive": {"tokens_per_s": [100.0, 104.0, 98.0], "losses": [6.2, 6.1, 6.0, 5.95]},
        "base": {
            "tokens_per_s": [125.0, 128.0, 121.0],
            "losses": [6.2, 6.1, 6.0, 5.95],
            "speed": base,
            "loss_change": {"pct": 0.0, "ci_low": 0.0, "ci_high": 0.0, "flagged": False},
        },
    }
    config = {
        "model": "tiny-llama",
        "seq_len": 32,
        "compare": ["naive", "base"],
        "rounds": 3,
        "segment_steps": 2,
    }
    run = _start(store, "train", "tiny-llama", config)
    doc = {"reference": "naive", "order": [["naive", "base"]] * 3, "strategies": strategies}
    store.finish_run(run, "complete", result={"compare": doc, "model": MODEL, "threads": THREADS})
    return run


def distill_run(store: Store) -> int:
    """A distillation shaped as ``unbottle distill`` stores it."""
    a, b = perplexity(0.0, seed=3), perplexity(-0.1, seed=3)
    gain = compare_eval(a, b).to_dict()

    def model(ppl: float, params: float) -> dict:
        return {"perplexity": ppl, "ci95": [ppl * 0.95, ppl * 1.05], "parameters": params, "seconds": 1.0}

    def run(losses: list[float], kd: bool) -> dict:
        parts = {"ce": 1.0, "kl": 0.5} if kd else {}
        history = [{"step": i + 1, "loss": v, "tokens_per_s": 400.0, **parts} for i, v in enumerate(losses)]
        return {"steps": len(losses), "tokens_per_s": 400.0, "history": history, "resumed_from": 0}

    result = {
        "student": {"spec": "half", "from_teacher_layers": [0, 1], "layers": 1},
        "eval": {"corpus": "packaged corpus persuasion.txt", "eval_tokens": 512},
        "models": {"teacher": model(37.0, 1.3e8), "initial student": model(1.5e6, 8e7),
                   "distilled student": model(156.0, 8e7), "no-distill student": model(179.0, 8e7)},
        "comparisons": {"distilled vs teacher": gain, "distilled vs no-distill": gain},
        "runs": {"distilled": run([6.0, 5.0, 4.5], True), "no-distill": run([7.0, 6.0, 5.5], False)},
        "saved": {"distilled": "/tmp/d/student"}, "model": MODEL, "threads": THREADS,
    }  # fmt: skip
    run_id = _start(store, "distill", "smollm2-135m", {"teacher": "smollm2-135m", "seq_len": 32})
    store.finish_run(run_id, "complete", result=result)
    return run_id


@pytest.fixture
def make_optimize_doc():
    """``optimize_doc``, for tests that stand in for the search."""
    return optimize_doc


@pytest.fixture
def store() -> Store:
    with Store() as s:
        yield s


@pytest.fixture
def runs(store: Store) -> dict[str, int]:
    """One run of each kind, by name; the last one stored is ``ab``."""
    made = {
        "bench": bench_run(store),
        "bench-again": bench_run(store),  # the same measurement again: something for compare
        "eval": eval_run(store),
        "optimize": optimize_run(store),
        "profile": profile_run(store),
        "train": train_run(store),
        "train-compare": train_compare_run(store),
        "train-newer": train_run(
            store, ("comm_s",), {"diagnosis": DIAGNOSIS, "world": 2, "fsdp": {"shards": 2}}
        ),
    }
    made["distill"] = distill_run(store)
    odd = _start(store, "distill", "tiny-llama", {"teacher": "smollm2-135m", "steps": 4})
    store.finish_run(odd, "complete", result={"kl_final": 0.4, "student": {"params": 1000}})
    made["distill-odd"] = odd  # a result shape the report does not know: the generic view
    made["ab"] = ab_run(store)
    return made
