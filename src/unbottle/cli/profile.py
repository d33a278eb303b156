"""``unbottle profile``: where the time goes, measured against this machine's peaks, and what to do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    handle_errors,
    out,
    recorded_run,
    stderr_say,
)

EXAMPLES = """
Examples:

  unbottle profile smollm2-135m --threads 1 --json

  unbottle profile ./my-model --prompt-length 512 --decode-tokens 32 --trace traces/
"""


@handle_errors
def profile(
    model: Annotated[
        str, typer.Argument(help="Model name, HF folder, .gguf file or recipe folder.")
    ] = "smollm2-135m",
    prompt_length: Annotated[int, typer.Option(help="Prefill window (tokens, batch 1).")] = 128,
    decode_tokens: Annotated[int, typer.Option(help="Decode steps profiled after the prompt.")] = 16,
    threads: ThreadsOpt = None,
    trace: Annotated[
        str | None, typer.Option(help="Folder for Chrome/Perfetto traces [default: the store's].")
    ] = None,
    refresh_peaks: Annotated[bool, typer.Option(help="Re-measure the machine peaks.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Machine peaks, hotspots per phase and module group, roofline (MFU/MBU), ranked diagnosis."""
    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.profiling import ProfileConfig, cached_peaks, profile_model
    from unbottle.sources import resolve
    from unbottle.sources.base import require_causal_lm
    from unbottle.store import Store

    store = Store()
    trace_dir = trace or str(store.root / "traces")
    config = ProfileConfig(
        prompt_length=prompt_length,
        decode_tokens=decode_tokens,
        threads=threads,
        trace_dir=trace_dir,
        refresh_peaks=refresh_peaks,
        device=device,
    )
    from unbottle.profiling.run import trace_paths

    trace_paths(trace_dir, "probe")  # an unwritable trace folder fails before anything loads
    source = resolve(model)
    settings = apply_threads(threads)
    say = stderr_say(quiet)
    say(f"loading {source.describe()} …")
    loaded = source.load()
    require_causal_lm(loaded, model, "unbottle profile profiles causal language models")
    say(f"machine peaks at {settings['torch_num_threads']} thread(s) (measured once, then cached) …")
    peaks = cached_peaks(store, settings["torch_num_threads"], refresh_peaks, device)
    with recorded_run(store, "profile", model, config.to_dict(), manifest()) as run_id:
        say("profiling prefill and decode …")
        doc = profile_model(loaded, config, peaks, label=f"run-{run_id}")
    result = {"profile": doc, "model": loaded.info.to_dict(), "threads": settings}
    store.finish_run(run_id, "complete", result=result)
    from unbottle.cli.show import show_run

    show_run(store, run_id, json_)


def show_profile(doc: dict[str, Any]) -> None:
    from unbottle.reporting.profile import (
        findings_table,
        groups_table,
        ops_table,
        peaks_table,
        roofline_table,
    )

    out.print(peaks_table(doc["peaks"]))
    for phase, data in doc["phases"].items():
        out.print(groups_table(phase, data))
        out.print(ops_table(phase, data))
    out.print(roofline_table(doc))
    out.print(findings_table(doc["diagnosis"]))
    for path in doc["traces"]:
        out.print(f"trace: {path} (open in https://ui.perfetto.dev or chrome://tracing)", highlight=False)
