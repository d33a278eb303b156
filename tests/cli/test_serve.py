"""``unbottle serve``: the OpenAI API in front of a model, checked in process (FastAPI's test client)
and once over a real socket on 127.0.0.1; bounded in time and tokens."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from unbottle.api.serving import create_app
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError
from unbottle.models import load

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"


@pytest.fixture(scope="module")
def served():
    loaded = load("tiny-llama")
    loaded.model.generation_config.eos_token_id = None  # random weights: decode to max_tokens
    loaded.tokenizer.eos_token_id  # noqa: B018 (the byte tokenizer's </s> stays an end-of-sequence)
    return loaded, TestClient(create_app(loaded, "tiny-llama"))


def _greedy(loaded, ids: list[int], n: int) -> list[int]:
    record: list = []
    decode_once(loaded.model, torch.tensor([ids]), n, CpuTimer(), record=record)
    return [int(t) for t in torch.cat(record, dim=1)[0]]


def test_a_greedy_completion_is_the_models_greedy_decoding_with_usage(served):
    loaded, client = served
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-llama"
    body = {"model": "tiny-llama", "prompt": "It was a bright cold day", "max_tokens": 12, "temperature": 0}
    got = client.post("/v1/completions", json=body).json()
    ids = loaded.tokenizer(body["prompt"])["input_ids"]
    expected = _greedy(loaded, ids, 12)
    eos = loaded.tokenizer.eos_token_id
    kept = expected[: expected.index(eos)] if eos in expected else expected
    assert got["object"] == "text_completion" and got["choices"][0]["text"] == loaded.tokenizer.decode(kept)
    assert got["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(kept),
                            "total_tokens": len(ids) + len(kept)}  # fmt: skip
    assert got["choices"][0]["finish_reason"] == ("length" if len(kept) == 12 else "stop")


def test_streamed_deltas_add_up_to_the_whole_answer_and_chat_uses_the_template(served):
    loaded, client = served
    body = {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    messages = [{"role": "user", "content": "hello"}]
    refused = client.post("/v1/chat/completions", json={"messages": messages})
    assert refused.status_code == 400 and "no chat template" in refused.json()["error"]["message"]
    loaded.tokenizer.chat_template = TEMPLATE
    try:
        asked = {"messages": messages, "max_tokens": 5, "temperature": 0}
        chat = client.post("/v1/chat/completions", json=asked)
    finally:
        loaded.tokenizer.chat_template = None
    answer = chat.json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["prompt_tokens"] == len(loaded.tokenizer("<user>hello\n<assistant>")["input_ids"])


def test_sampling_with_a_seed_repeats_and_stop_strings_cut(served):
    _, client = served
    body = {"prompt": "abc", "max_tokens": 16, "temperature": 1.0, "seed": 7}
    first = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert client.post("/v1/completions", json=body).json()["choices"][0]["text"] == first
    if len(first) > 3:
        stop = first[2:4]
        cut = client.post("/v1/completions", json={**body, "stop": stop}).json()["choices"][0]
        assert cut["text"] == first[: first.index(stop)] and cut["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"prompt": "a", "n": 2}, 400, "not supported by this server: n > 1"),
        ({"prompt": "a", "top_p": 0.5}, 400, "top_p < 1"),
        ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens 0 given; allowed: an integer from 1 to 4096"),
        ({"prompt": "a", "temperature": 3}, 400, "temperature 3 given"),
        ({"prompt": "a", "model": "gpt-4"}, 404, "model 'gpt-4' is not served here"),
        ({"max_tokens": 3}, 400, "the request needs 'prompt'"),
        ({"prompt": ["a", "b"]}, 400, "prompt must be a string or a list of token ids"),
        ({"prompt": "a", "stop": 5}, 400, "stop must be a string"),
    ],
)
def test_bad_requests_are_answered_with_what_is_allowed(served, body, status, says):
    _, client = served
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_an_encoder_is_refused_before_serving():
    with pytest.raises(ConfigError, match="is a masked-lm model; unbottle serve serves causal LMs"):
        create_app(load("tiny-bert"), "tiny-bert")


def test_the_server_answers_over_a_socket_on_this_machine(served):
    """uvicorn on 127.0.0.1 and a free port, one request, shut down: what `unbottle serve` runs."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(served[0], "tiny-llama"), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        body = {"prompt": "hi", "max_tokens": 4, "temperature": 0}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
    finally:
        server.should_exit = True
        thread.join(timeout=30)
