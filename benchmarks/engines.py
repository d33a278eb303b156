"""Engines side by side on one GGUF: unbottle's winner against llama.cpp, ONNX Runtime GenAI and torch.

One process, one host, rounds interleaved (every engine once per round, in rotated order, so drift
and a neighbour's load hit all of them). Per engine and thread count: decode tokens/s (greedy, after
a 32-token prompt, the first token excluded as unbottle's decode metric does), prefill tokens/s and
request latency (prompt + 128 new tokens) per prompt length, perplexity on the same 4,096 tokens of
the packaged text (not for llama.cpp: its own loop has no window scorer here), weight bytes read per
token and the fraction of this host's read bandwidth that decode speed implies.

Engines: fp32 and bf16 eager torch; unbottle's candidate ``genai:weights=gguf`` in unbottle's decode
loop (or a saved winner, ``--winner DIR``), the same build with the prompt in fp32 torch
(``prefill=torch``), and the build in ONNX Runtime GenAI's own loop; the GenAI model
builder's int8, int4 round-to-nearest and int4 k-quant (last MatMul int8) builds of the same fp32
weights, in GenAI's loop; llama.cpp (llama-cpp-python, built as benchmarks/README.md says) on the
GGUF file as shipped. Intervals: paired bootstrap ratio of medians over rounds (95%).

Goals (issue 14), checked at 1 thread; exit code 1 when one is missed: winner >= 1.3x llama.cpp,
>= 6x fp32 eager, perplexity change <= 1%, >= 85% of the decode roofline.

Usage: python benchmarks/engines.py [--threads 1,2] [--rounds 7] [--prompt-lengths 128,512,2048]
Writes benchmarks/results/engines.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unbottle.core.env import manifest
from unbottle.evaluation import perplexity
from unbottle.models import load
from unbottle.passes import apply_, parse_pass
from unbottle.profiling.graph_ceiling import measure_ceiling
from unbottle.profiling.graph_profile import read_bytes
from unbottle.stats.paired import ratio_of_medians_paired

WINNER = "unbottle genai:weights=gguf"
HYBRID = "unbottle genai:weights=gguf,prefill=torch (torch prompt, graph decode)"
NEW_SHOWN = 128  # new tokens of the request latency column (--new-tokens)
GOALS = {"x_llama_cpp": 1.3, "x_fp32": 6.0, "ppl_change_pct": 1.0, "roofline": 0.85}


class TorchEngine:
    """A model unbottle loads (torch, or its ONNX Runtime / GenAI runtimes) in unbottle's loops."""

    def __init__(self, loaded, weight_bytes: float) -> None:
        self.loaded, self.weight_bytes = loaded, weight_bytes

    def decode(self, prompt: list[int], new: int) -> tuple[float, float]:
        """(prefill + first token seconds, decode tokens/s of the later steps)."""
        from unbottle.benchmarking.scenarios import decode_once
        from unbottle.benchmarking.timing import CpuTimer

        out = decode_once(self.loaded.model, torch.tensor([prompt]), new, CpuTimer())
        return out["ttft"][0], out["tokens_per_s"][0]

    def perplexity(self) -> float:
        return perplexity(self.loaded, eval_tokens=4096, batch_size=1).value


class GenaiEngine:
    """A GenAI build run in onnxruntime-genai's own loop, as a user of the builder would."""

    def __init__(self, loaded, threads: int) -> None:
        import onnxruntime_genai as og

        self.loaded, self.folder = loaded, loaded.model.folder
        config = og.Config(str(self.folder))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)
        self.weight_bytes = read_bytes(self.folder / "model.onnx")

    def decode(self, prompt: list[int], new: int) -> tuple[float, float]:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + new + 1, do_sample=False)
        gen = og.Generator(self.model, params)
        start = time.perf_counter()
        gen.append_tokens(prompt)
        gen.generate_next_token()
        first = time.perf_counter()
        for _ in range(new - 1):
            gen.generate_next_token()
        return first - start, (new - 1) / (time.perf_counter() - first)

    def perplexity(self) -> float:
        return perplexity(self.loaded, eval_tokens=4096, batch_size=1).value


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python on the GGUF file, greedy (argmax of its logits)."""

    def __init__(self, path: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            str(path), n_threads=threads, n_threads_batch=threads, n_ctx=context, n_batch=512, verbose=False
        )
        self.weight_bytes = path.stat().st_size
        self.vocab = self.llm.n_vocab()

    def next_token(self) -> int:
        """Argmax of the last position's logits (llama-cpp-python keeps no copy without logits_all)."""
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.vocab,))
        return int(np.argmax(logits))

    def decode(self, prompt: list[int], new: int) -> tuple[float, float]:
        llm = self.llm
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        llm.eval([self.next_token()])
        first = time.perf_counter()
        for _ in range(new - 1):
            llm.eval([self.next_token()])
        return first - start, (new - 1) / (time.perf_counter() - first)

    def perplexity(self) -> float | None:
        return None


def torch_read_bytes(model) -> float:
    """Parameter bytes a decode step reads (an untied input embedding only gathers one row)."""
    embed = model.get_input_embeddings().weight
    tied = embed.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return float(total if tied else total - embed.numel() * embed.element_size())


def build_engines(base, gguf_path: Path, threads: int, winner: str | None, max_context: int) -> dict:
    torch.set_num_threads(threads)
    genai = {
        WINNER: "genai:weights=gguf",
        "GenAI loop, genai:weights=blocks build (4-bit from the float weights)": "genai:weights=blocks",
        "GenAI builder int8": "genai:precision=int8",
        "GenAI builder int4 RTN": "genai:precision=int4",
        "GenAI builder int4 k-quant, last MatMul int8": (
            "genai:precision=int4,algo=k_quant,mixed=last_matmul:int8"
        ),
    }
    engines = {"fp32 eager": TorchEngine(base, torch_read_bytes(base.model))}
    bf16, _ = apply_(base, [parse_pass("precision")])
    engines["bf16 eager"] = TorchEngine(bf16, torch_read_bytes(bf16.model))
    for label, spec in genai.items():
        built, _ = apply_(base, [parse_pass(spec + f",threads={threads}")])
        if label == WINNER:
            if winner:
                built = load(winner)
                label = f"unbottle winner ({Path(winner).name})"
            path = getattr(built.model, "path", None)
            read = read_bytes(path) if path else torch_read_bytes(built.model)
            engines[label] = TorchEngine(built, read)
            hybrid, _ = apply_(base, [parse_pass(f"genai:weights=gguf,prefill=torch,threads={threads}")])
            engines[HYBRID] = TorchEngine(hybrid, read)  # decode reads the graph's weights only
            label = "GenAI loop, genai:weights=gguf build"
        engines[label] = GenaiEngine(built, threads)
    engines["llama.cpp (GGUF as shipped)"] = LlamaCppEngine(gguf_path, threads, max_context)
    return engines


def run_rounds(engines: dict, rounds: int, prompts: dict[int, list[int]], new: int) -> dict:
    """Every engine once per round, the order rotated each round; a warm-up round first."""
    names = list(engines)
    out = {n: {"decode": [], **{f"ttft_{p}": [] for p in prompts}} for n in names}
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            ttft, rate = engines[name].decode(prompts[min(prompts)][:32], new)
            longer = {p: engines[name].decode(ids, 2)[0] for p, ids in prompts.items()}
            if r == 0:
                continue
            out[name]["decode"].append(rate)
            for p, seconds in longer.items():
                out[name][f"ttft_{p}"].append(seconds)
        print(f"  round {r}/{rounds} done", file=sys.stderr, flush=True)
    return out


def roofline_bandwidth(bandwidth: dict, nbytes: float) -> tuple[str, float]:
    """(``cache`` | ``dram``, GB/s): the bandwidth a step reading ``nbytes`` meets (cache when they fit
    in 90% of the last-level cache and its bandwidth was measured)."""
    fits = nbytes <= 0.9 * (bandwidth["llc_bytes"] or 0)
    if bandwidth["cache_bandwidth_gbps"] and fits:
        return "cache", bandwidth["cache_bandwidth_gbps"]
    return "dram", bandwidth["bandwidth_gbps"]


def summarise(engines: dict, samples: dict, bandwidth: dict, new: int, ppl: dict) -> dict:
    fp32, llama = samples["fp32 eager"]["decode"], samples["llama.cpp (GGUF as shipped)"]["decode"]
    rows = {}
    for name, s in samples.items():
        rate = float(np.median(s["decode"]))
        read = engines[name].weight_bytes
        which, gbps = roofline_bandwidth(bandwidth, read)
        x_fp32 = ratio_of_medians_paired(fp32, s["decode"])
        x_llama = ratio_of_medians_paired(llama, s["decode"])
        rows[name] = {
            "decode_tokens_per_s": rate,
            "decode_rounds": s["decode"],
            "x_fp32": [x_fp32.point, x_fp32.ci_low, x_fp32.ci_high],
            "x_llama_cpp": [x_llama.point, x_llama.ci_low, x_llama.ci_high],
            "weight_bytes_read_per_token": read,
            "achieved_gbps": rate * read / 1e9,
            "roofline_bandwidth": which,
            "roofline_fraction": rate * read / 1e9 / gbps,
            "perplexity": ppl.get(name),
            "ppl_change_pct": None if ppl.get(name) is None else 100 * (ppl[name] / ppl["fp32 eager"] - 1),
            "request_latency_s": {
                k.removeprefix("ttft_"): float(np.median(v)) + (new - 1) / rate
                for k, v in s.items()
                if k.startswith("ttft_")
            },
            "prefill_tokens_per_s": {
                k.removeprefix("ttft_"): int(k.removeprefix("ttft_")) / float(np.median(v))
                for k, v in s.items()
                if k.startswith("ttft_")
            },
        }
    return rows


def loop_overhead(samples: dict) -> dict | None:
    """Per-token seconds unbottle's decode loop adds to GenAI's own loop on the same build, paired by
    round (the Python around each step: feeding the token, reading the logits, the argmax)."""
    ours, theirs = samples.get(WINNER), samples.get("GenAI loop, genai:weights=gguf build")
    if not ours or not theirs:
        return None
    per_round = [1 / a - 1 / b for a, b in zip(ours["decode"], theirs["decode"], strict=True)]
    ratio = ratio_of_medians_paired(theirs["decode"], ours["decode"])
    return {
        "ms_per_token": 1000 * float(np.median(per_round)),
        "ms_per_token_rounds": [1000 * v for v in per_round],
        "speed_vs_genai_loop": [ratio.point, ratio.ci_low, ratio.ci_high],
    }


def print_table(threads: int, rows: dict) -> None:
    print(f"\n**{threads} thread(s)**\n")
    lengths = list(next(iter(rows.values()))["prefill_tokens_per_s"])
    head = " | ".join(f"prefill {p} tok/s" for p in lengths)
    head += " | " + " | ".join(f"request {p}+{NEW_SHOWN} s" for p in lengths)
    print(
        f"| engine | decode tok/s | x fp32 eager [95% CI] | x llama.cpp [95% CI] | {head} "
        "| ppl change | weights read/token | roofline |"
    )
    print("|---" * (7 + 2 * len(lengths)) + "|")
    for name, r in rows.items():
        ci = lambda v: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"  # noqa: E731
        pre = " | ".join(f"{r['prefill_tokens_per_s'][p]:.0f}" for p in lengths)
        pre += " | " + " | ".join(f"{r['request_latency_s'][p]:.2f}" for p in lengths)
        ppl = "—" if r["ppl_change_pct"] is None else f"{r['ppl_change_pct']:+.2f}%"
        print(
            f"| {name} | {r['decode_tokens_per_s']:.1f} | {ci(r['x_fp32'])} | {ci(r['x_llama_cpp'])} "
            f"| {pre} | "
            f"{ppl} | {r['weight_bytes_read_per_token'] / 2**20:.1f} MiB | "
            f"{100 * r['roofline_fraction']:.0f}% of {r['roofline_bandwidth']} |"
        )


def engine_ceiling(engines: dict, threads: int, bandwidth: dict) -> dict | None:
    """The winner's graph step against its weight kernels alone (``profiling.graph_ceiling``), at the
    decode benchmark's mean context, with the fraction of the roofline's bandwidth those kernels reach."""
    name = next((n for n in engines if n.startswith("unbottle")), None)
    model = getattr(engines[name], "loaded", None).model if name else None
    if model is None or not hasattr(model, "path"):
        return None
    got = measure_ceiling(model, context=32 + NEW_SHOWN // 2, threads=threads)
    gbps = roofline_bandwidth(bandwidth, got["weight_bytes"])[1]
    return {**got, "engine": name, "roofline_fraction": got["weights_gbps"] / gbps}


def goals(rows: dict) -> list[str]:
    """The issue's goals this run missed (at 1 thread), each in one line."""
    winner = next(r for n, r in rows.items() if n.startswith("unbottle"))
    missed = []
    if winner["x_llama_cpp"][1] < GOALS["x_llama_cpp"]:
        missed.append(
            f"x llama.cpp {winner['x_llama_cpp'][0]:.2f} (CI low {winner['x_llama_cpp'][1]:.2f}) < 1.3"
        )
    if winner["x_fp32"][1] < GOALS["x_fp32"]:
        missed.append(f"x fp32 eager {winner['x_fp32'][0]:.2f} (CI low {winner['x_fp32'][1]:.2f}) < 6")
    if winner["ppl_change_pct"] is not None and winner["ppl_change_pct"] > GOALS["ppl_change_pct"]:
        missed.append(f"perplexity change {winner['ppl_change_pct']:+.2f}% > 1%")
    if winner["roofline_fraction"] < GOALS["roofline"]:
        missed.append(f"roofline {100 * winner['roofline_fraction']:.0f}% < 85%")
    fp32 = rows["fp32 eager"]["request_latency_s"]
    served = rows.get(HYBRID, winner)  # the candidate made for long prompts, when it ran
    for p, seconds in served["request_latency_s"].items():
        if seconds >= fp32[p]:
            missed.append(
                f"request latency at prompt {p}: {seconds:.2f} s >= fp32 eager's {fp32[p]:.2f} s "
                "(unbottle optimize names the slower phase in its verdict at such a workload)"
            )
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--winner", default=None, help="a folder `unbottle optimize` saved (default: the candidate)"
    )
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-lengths", default="128,512,2048")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engines.json"))
    args = parser.parse_args()
    global NEW_SHOWN
    NEW_SHOWN = args.new_tokens
    from unbottle.passes.apply import gguf_source
    from unbottle.profiling.peaks import measure_bandwidths

    base = load(args.model)
    gguf_path = gguf_source(base.info)
    lengths = [int(p) for p in args.prompt_lengths.split(",")]
    rng = np.random.default_rng(0)
    prompts = {p: rng.integers(100, base.model.config.vocab_size - 100, p).tolist() for p in lengths}
    doc = {"model": args.model, "gguf": str(gguf_path), "new_tokens": args.new_tokens, "results": {}}
    missed = []
    for threads in [int(t) for t in args.threads.split(",")]:
        engines = build_engines(base, gguf_path, threads, args.winner, max(lengths) + args.new_tokens + 8)
        torch.set_num_threads(threads)
        bandwidth = measure_bandwidths()
        samples = run_rounds(engines, args.rounds, prompts, args.new_tokens)
        ppl = {} if threads != 1 else {n: e.perplexity() for n, e in engines.items()}
        ppl = ppl or {n: r["perplexity"] for n, r in doc["results"].get("1", {}).get("rows", {}).items()}
        rows = summarise(engines, samples, bandwidth, args.new_tokens, ppl)
        overhead = loop_overhead(samples)
        ceiling = engine_ceiling(engines, threads, bandwidth)
        doc["results"][str(threads)] = {
            "bandwidth": bandwidth,
            "rows": rows,
            "rounds": args.rounds,
            "loop_overhead": overhead,
            "engine_ceiling": ceiling,
        }
        print_table(threads, rows)
        if ceiling:
            print(
                f"\nthe winner's graph: one decode step {1e3 * ceiling['step_s']:.2f} ms; its weight "
                f"kernels alone {1e3 * ceiling['weights_s']:.2f} ms "
                f"({ceiling['tokens_per_s_ceiling']:.1f} tok/s at most, "
                f"{ceiling['weights_gbps']:.1f} GB/s = {100 * ceiling['roofline_fraction']:.0f}% of the "
                "bandwidth the roofline column uses)"
            )
        if overhead:
            r = overhead["speed_vs_genai_loop"]
            print(
                f"\nunbottle's loop adds {overhead['ms_per_token']:.2f} ms per token to GenAI's own loop "
                f"(x{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] of its speed)"
            )
        if threads == 1:
            missed = goals(rows)
        del engines
    import llama_cpp
    import onnxruntime_genai

    doc["manifest"] = manifest()
    doc["engine_versions"] = {
        "onnxruntime-genai": onnxruntime_genai.__version__,
        "llama-cpp-python": llama_cpp.__version__,
    }
    doc["missed_goals"] = missed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".tmp").replace(out)
    print(f"\nwrote {out}")
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
