"""``unbottle profile``: where the time goes, measured against this machine's peaks, and what to do."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.hotspots import profile as run_profile
from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    StatusLines,
    ThreadsOpt,
    handle_errors,
)
from unbottle.cli.show import show_run
from unbottle.profiling import ProfileConfig
from unbottle.store import Store

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
    store = Store()
    config = ProfileConfig(
        prompt_length=prompt_length,
        decode_tokens=decode_tokens,
        threads=threads,
        trace_dir=trace,
        refresh_peaks=refresh_peaks,
        device=device,
    )
    doc = run_profile(model, config, store=store, progress=StatusLines(quiet))
    show_run(store, doc["run_id"], json_, doc)
