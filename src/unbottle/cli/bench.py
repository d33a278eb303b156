"""``unbottle bench``: measure a causal LM's prefill, decode and generate speed and store it."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.speed import bench as run_bench
from unbottle.benchmarking import BenchConfig
from unbottle.benchmarking.config import SCENARIOS
from unbottle.cli.common import (
    AllowPickleOpt,
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    float_list,
    handle_errors,
    int_list,
    str_list,
)
from unbottle.cli.show import show_run
from unbottle.reporting.progress import BenchProgress
from unbottle.store import Store

SPECULATIVE_HELP = (
    "'lookup' or 'draft=MODEL': decode speculatively, drafting by prompt lookup or with a smaller model of "
    "the same vocabulary (same greedy tokens; batch 1)."
)
EXAMPLES = """
Examples:

  unbottle bench smollm2-135m --threads 1 --json

  unbottle bench ./my-model-folder --prompt-lengths 128,1024 --batch-sizes 1,8 --new-tokens 64

  unbottle bench model.gguf --scenarios decode --min-time 10

  unbottle bench smollm2-135m --scenarios serve --rates 1,2,4 --threads 1
"""


@handle_errors
def bench(
    model: Annotated[
        str, typer.Argument(help="Model name (see `unbottle models`), HF folder or .gguf file.")
    ] = "smollm2-135m",
    prompt_lengths: Annotated[str, typer.Option(help="Prefill prompt lengths, comma-separated.")] = "32,512",
    batch_sizes: Annotated[str, typer.Option(help="Decode batch sizes, comma-separated.")] = "1,4",
    new_tokens: Annotated[int, typer.Option(help="Tokens generated per decode/generate repeat.")] = 128,
    decode_prompt_length: Annotated[int, typer.Option(help="Prompt tokens before decoding.")] = 32,
    scenarios: Annotated[str, typer.Option(help="Of prefill,decode,generate,serve.")] = ",".join(SCENARIOS),
    rates: Annotated[str, typer.Option(help="serve: request arrival rates per second.")] = "1,2,4",
    serve_requests: Annotated[int, typer.Option(help="serve: requests per rate.")] = 32,
    max_batch: Annotated[int, typer.Option(help="serve: requests decoded together at most.")] = 8,
    slo_ttft: Annotated[float, typer.Option(help="serve: goodput's time-to-first-token limit, s.")] = 1.0,
    slo_tpot: Annotated[float, typer.Option(help="serve: goodput's time-per-token limit, s.")] = 0.1,
    threads: ThreadsOpt = None,
    min_time: Annotated[float, typer.Option(help="Minimum measured seconds per point.")] = 2.0,
    min_repeats: Annotated[int, typer.Option(help="Minimum measured repeats per point.")] = 5,
    warmup: Annotated[int, typer.Option(help="Unmeasured warm-up repeats per point.")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed for prompt selection.")] = 0,
    speculative: Annotated[str | None, typer.Option(help=SPECULATIVE_HELP)] = None,
    allow_pickle: AllowPickleOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Benchmark prefill, decode (with KV cache) and generate; every raw sample goes to the store."""
    config = BenchConfig(
        scenarios=str_list(scenarios), prompt_lengths=int_list("--prompt-lengths", prompt_lengths),
        batch_sizes=int_list("--batch-sizes", batch_sizes), rates=float_list("--rates", rates),
        new_tokens=new_tokens, decode_prompt_length=decode_prompt_length, threads=threads, warmup=warmup,
        min_repeats=min_repeats, min_time_s=min_time, device=device, seed=seed, speculative=speculative,
        serve_requests=serve_requests, max_batch=max_batch, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
    )  # fmt: skip
    store = Store()
    with BenchProgress(quiet, points=config.n_points()) as progress:
        doc = run_bench(model, config, store=store, progress=progress, allow_pickle=allow_pickle)
    show_run(store, doc["run_id"], json_, doc)
