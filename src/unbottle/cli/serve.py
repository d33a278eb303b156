"""``unbottle serve``: an OpenAI-compatible HTTP endpoint for a model (``unbottle.api.serving``)."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.serving import create_app
from unbottle.benchmarking import apply_threads
from unbottle.cli.common import AllowPickleOpt, ThreadsOpt, handle_errors
from unbottle.core.errors import ConfigError
from unbottle.models import load

EXAMPLES = """
Examples:

  unbottle serve smollm2-135m --port 8000 --threads 1

  unbottle serve ./smollm2-fast          # the folder unbottle optimize saved

  curl -s 127.0.0.1:8000/v1/completions -H 'content-type: application/json' \\
    -d '{"prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}'
"""


@handle_errors
def serve(
    model: Annotated[str, typer.Argument(help="Model name, HF folder, .gguf file or saved folder.")] = (
        "smollm2-135m"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    name: Annotated[str | None, typer.Option(help="Model name the API answers to [default: MODEL].")] = None,
    threads: ThreadsOpt = None,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Serve MODEL over the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("unbottle serve needs FastAPI and uvicorn: pip install 'unbottle[serve]'") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} given; allowed: 1 to 65535")
    apply_threads(threads)
    loaded = load(model, allow_pickle=allow_pickle)
    app = create_app(loaded, name or model)
    where = f"http://{host}:{port}/v1"
    typer.echo(f"serving {name or model} on {where} (one request at a time; Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
