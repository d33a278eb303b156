"""``unbottle serve MODEL``: an OpenAI-compatible HTTP endpoint in front of any model unbottle loads.

So the tools a service is load-tested with (locust, vLLM's and OpenAI's clients) can drive an optimised
model as they drive a hosted one. FastAPI and uvicorn (``pip install 'unbottle[serve]'``) carry the
HTTP; the routes are the OpenAI API's ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions`` (the tokenizer's chat template), each answered whole or streamed as
server-sent events (``"stream": true``), with token usage. Decoding is the model's own forward with a
KV cache, greedy at ``temperature`` 0 and sampled at the given temperature otherwise (``seed`` makes
it repeatable), stopping at end-of-sequence, ``max_tokens`` or a ``stop`` string.

One request decodes at a time (a lock): the model and its cache are not shared between requests. The
continuous-batching loop of the ``serve`` bench scenario is not behind this endpoint yet, so it shows
a load tool the queueing of one sequential server. Options the loop does not implement (``n`` > 1,
``logprobs``, ``top_p`` < 1, penalties, tools) are refused with a 400 naming them, never ignored.
"""

import json  # no ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import torch

from unbottle.core.errors import ConfigError
from unbottle.runtime.caches import cache_keyword, forward_kwargs, new_cache

MAX_TOKENS_LIMIT = 4096
_UNSUPPORTED = {  # field: (the value that means "off", what to say)
    "n": (1, "n > 1 (one choice per request)"),
    "logprobs": (None, "logprobs"),
    "top_logprobs": (None, "top_logprobs"),
    "best_of": (None, "best_of"),
    "echo": (False, "echo"),
    "top_p": (1.0, "top_p < 1 (nucleus sampling)"),
    "frequency_penalty": (0.0, "frequency_penalty"),
    "presence_penalty": (0.0, "presence_penalty"),
    "logit_bias": (None, "logit_bias"),
    "tools": (None, "tools"),
    "suffix": (None, "suffix"),
}


class RequestError(ValueError):
    """A request this server can't answer; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_request(body: Any, served: str, chat: bool) -> dict[str, Any]:
    """The decoding settings of an OpenAI request body, or a ``RequestError`` naming what is wrong."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("model") not in (None, served):
        raise RequestError(
            f"model {body.get('model')!r} is not served here; this server serves {served!r}", 404
        )
    off = [
        say for key, (default, say) in _UNSUPPORTED.items() if body.get(key, default) not in (default, None)
    ]
    if off:
        raise RequestError(f"not supported by this server: {', '.join(off)}; leave them out")
    field = "messages" if chat else "prompt"
    if field not in body:
        raise RequestError(f"the request needs {field!r}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
    temperature = body.get("temperature", 1.0)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise RequestError(
            f"max_tokens {max_tokens!r} given; allowed: an integer from 1 to {MAX_TOKENS_LIMIT}"
        )
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise RequestError(f"temperature {temperature!r} given; allowed: 0 (greedy) to 2")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise RequestError("stop must be a string or a list of up to 4 non-empty strings")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise RequestError(f"seed {seed!r} given; allowed: an integer")
    return {"input": body[field], "max_tokens": max_tokens, "temperature": float(temperature), "stop": stop,
            "seed": seed, "stream": bool(body.get("stream", False))}  # fmt: skip


class Engine:
    """One loaded model behind a lock: prompts in, tokens out (greedy or sampled), one request at a time."""

    def __init__(self, loaded: Any, served: str) -> None:
        if loaded.info.task != "causal-lm":
            raise ConfigError(
                f"{served!r} is a {loaded.info.task} model; unbottle serve serves causal LMs (completions)"
            )
        if loaded.tokenizer is None:
            raise ConfigError(f"{served!r} has no tokenizer; the endpoint takes and returns text")
        self.loaded, self.served, self.lock = loaded, served, threading.Lock()
        self.tokenizer = loaded.tokenizer
        self.eos = _eos_ids(loaded)

    def prompt_ids(self, settings: dict[str, Any], chat: bool) -> list[int]:
        """The prompt's token ids: the chat template applied to ``messages``, or ``prompt`` tokenised."""
        given = settings["input"]
        if chat:
            if not isinstance(given, list) or not all(isinstance(m, dict) and "role" in m for m in given):
                raise RequestError("messages must be a list of {role, content} objects")
            if not getattr(self.tokenizer, "chat_template", None):
                raise RequestError(f"{self.served!r} has no chat template; use /v1/completions with a prompt")
            ids = self.tokenizer.apply_chat_template(given, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        elif isinstance(given, str):
            ids = self.tokenizer(given)["input_ids"]
        elif isinstance(given, list) and given and all(isinstance(t, int) for t in given):
            ids = given
        else:
            raise RequestError("prompt must be a string or a list of token ids (one prompt per request)")
        if not ids:
            raise RequestError("the prompt is empty")
        return [int(t) for t in ids]

    def tokens(self, ids: list[int], settings: dict[str, Any]) -> Iterator[int]:
        """Yield the completion's token ids one by one (end-of-sequence not included)."""
        model = self.loaded.model
        kw = forward_kwargs(model)
        temperature, generator = settings["temperature"], None
        if temperature > 0 and settings["seed"] is not None:
            generator = torch.Generator().manual_seed(settings["seed"])
        step = torch.tensor([ids])
        with torch.inference_mode():
            kw[cache_keyword(model)] = new_cache(model, len(ids) + settings["max_tokens"], 1)
            for _ in range(settings["max_tokens"]):
                logits = model(input_ids=step, use_cache=True, **kw).logits[0, -1].float()
                if temperature == 0:
                    token = int(logits.argmax())
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                if token in self.eos:
                    return
                yield token
                step = torch.tensor([[token]])


def _eos_ids(loaded: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(loaded.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), getattr(loaded.tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def complete(
    engine: Engine, ids: list[int], settings: dict[str, Any]
) -> Iterator[tuple[str, str | None, int]]:
    """Yield ``(text delta, finish_reason or None, completion tokens so far)`` for the prompt ``ids``;
    the last has the reason."""
    made: list[int] = []
    sent = ""
    with engine.lock:
        for token in engine.tokens(ids, settings):
            made.append(token)
            text = engine.tokenizer.decode(made, skip_special_tokens=True)
            cut = _stop_at(text, settings["stop"])
            if cut is not None:
                yield text[len(sent) : cut], "stop", len(made)
                return
            if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                continue
            yield text[len(sent) :], None, len(made)
            sent = text
    finish = "length" if len(made) == settings["max_tokens"] else "stop"
    text = engine.tokenizer.decode(made, skip_special_tokens=True)
    yield text[len(sent) :], finish, len(made)


def _stop_at(text: str, stops: list[str]) -> int | None:
    found = [text.find(s) for s in stops if s in text]
    return min(found) if found else None


def response(engine: Engine, ids: list[int], settings: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The whole OpenAI response object of one request."""
    deltas = list(complete(engine, ids, settings))
    text = "".join(d[0] for d in deltas)
    _, finish, made = deltas[-1]
    prompt = len(ids)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    return {
        **_head(engine, chat, chunk=False),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made},
    }


def stream(engine: Engine, ids: list[int], settings: dict[str, Any], chat: bool) -> Iterator[str]:
    """The response as server-sent events: one chunk per text delta, then ``data: [DONE]``."""
    head = _head(engine, chat, chunk=True)
    for delta, finish, _ in complete(engine, ids, settings):
        piece = {"delta": {"content": delta}} if chat else {"text": delta}
        yield f"data: {json.dumps({**head, 'choices': [{'index': 0, **piece, 'finish_reason': finish}]})}\n\n"
    yield "data: [DONE]\n\n"


def _head(engine: Engine, chat: bool, chunk: bool) -> dict[str, Any]:
    kind = ("chat.completion" + (".chunk" if chunk else "")) if chat else "text_completion"
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
            "model": engine.served}  # fmt: skip


def create_app(loaded: Any, served: str) -> Any:
    """The FastAPI application serving ``loaded`` under the model name ``served``.

    Raises:
        ConfigError: FastAPI is not installed, or the model can't be served (an encoder, no tokenizer).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, StreamingResponse
    except ImportError:
        raise ConfigError("unbottle serve needs FastAPI and uvicorn: pip install 'unbottle[serve]'") from None
    engine = Engine(loaded, served)
    app = FastAPI(title=f"unbottle: {served}")

    def answer(body: Any, chat: bool) -> Any:
        try:
            settings = parse_request(body, served, chat)
            ids = engine.prompt_ids(settings, chat)  # a bad prompt is a 400, not a broken stream
            if settings["stream"]:
                return StreamingResponse(stream(engine, ids, settings, chat), media_type="text/event-stream")
            return JSONResponse(response(engine, ids, settings, chat))
        except RequestError as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=exc.status)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "unbottle"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _run(answer, await _json(request), False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _run(answer, await _json(request), True)

    return app


async def _json(request: Any) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None  # parse_request answers 400


async def _run(answer: Any, body: Any, chat: bool) -> Any:
    """Decode off the event loop (the model's forward blocks), so the server keeps accepting."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(answer, body, chat)
