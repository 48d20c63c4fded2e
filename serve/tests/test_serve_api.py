"""The real server, on a tiny random DeepSeek-V2, driven by the official openai client and httpx."""

from __future__ import annotations

import base64
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve_harness import SERVED_NAME, Server

pytest.importorskip("torch", reason="loading a model needs torch")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    assert found, f"{name}{labels} not in metrics"
    return total


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    c: openai.OpenAI = server.openai()
    return c


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Any:
    """The same folder loaded in this process with plain transformers, for comparisons."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modeldeploy_serve.textmodel import dtype_kwarg

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), local_files_only=True,
                                                 **dtype_kwarg(torch.float32)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)

    class Ref:
        def greedy_ids(self, ids: list[int], n: int) -> list[int]:
            with torch.inference_mode():
                out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                     dtype=torch.long), max_new_tokens=n, do_sample=False,
                                     min_new_tokens=n, pad_token_id=tok.eos_token_id)
            return [int(t) for t in out[0, len(ids):]]

        def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return list(tok.encode(text, add_special_tokens=False))

        def decode(self, ids: list[int]) -> str:
            return str(tok.decode(ids, skip_special_tokens=True))

        tokenizer = tok

    return Ref()


def test_health_was_503_while_loading_then_200(server: Server) -> None:
    assert server.health_seen[-1] == 200
    assert 503 in server.health_seen, server.health_seen
    assert server.health_seen.index(503) < server.health_seen.index(200)
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_models_lists_the_served_name(client: openai.OpenAI, server: Server) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [SERVED_NAME]
    assert client.models.retrieve(SERVED_NAME).id == SERVED_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_completion_matches_plain_transformers(client: openai.OpenAI, reference: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"}]
    resp = client.chat.completions.create(model=SERVED_NAME, messages=messages,  # type: ignore[arg-type]
                                          max_tokens=12, temperature=0, extra_body={
                                              "ignore_eos": True})
    assert resp.object == "chat.completion" and resp.model == SERVED_NAME
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    prompt_ids = reference.chat_ids(messages)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(prompt_ids)
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == len(prompt_ids) + 12
    # greedy decoding through the server gives what transformers gives directly
    expected = reference.decode(reference.greedy_ids(prompt_ids, 12))
    assert choice.message.content == expected


def test_streamed_chat_equals_the_non_streamed_one(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": SERVED_NAME, "max_tokens": 16, "temperature": 0,
                              "messages": [{"role": "user", "content": "Hello, who are you?"}],
                              "extra_body": {"ignore_eos": True}}
    whole = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(stream=True,
                                            stream_options={"include_usage": True}, **kwargs)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == whole.choices[0].message.content
    assert content_chunks[-1].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 16
    assert whole.usage is not None and usage.prompt_tokens == whole.usage.prompt_tokens


def test_completion_and_its_options(client: openai.OpenAI, reference: Any) -> None:
    prompt = "The quick brown fox"
    resp = client.completions.create(model=SERVED_NAME, prompt=prompt, max_tokens=10,
                                     temperature=0, extra_body={"ignore_eos": True})
    assert resp.object == "text_completion"
    ids = list(reference.tokenizer.encode(prompt, add_special_tokens=True))
    expected = reference.decode(reference.greedy_ids(ids, 10))
    assert resp.choices[0].text == expected
    assert resp.usage is not None and resp.usage.prompt_tokens == len(ids)

    # token-id prompt, echo, several prompts, n
    by_ids = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=10,
                                       temperature=0, extra_body={"ignore_eos": True})
    assert by_ids.choices[0].text == expected
    echoed = client.completions.create(model=SERVED_NAME, prompt=prompt, max_tokens=10,
                                       temperature=0, echo=True, extra_body={"ignore_eos": True})
    assert echoed.choices[0].text == prompt + expected
    multi = client.completions.create(model=SERVED_NAME, prompt=["Hello", "Kubernetes"],
                                      max_tokens=4, n=2, temperature=0.9, seed=7)
    assert sorted(c.index for c in multi.choices) == [0, 1, 2, 3]
    assert multi.usage is not None and multi.usage.completion_tokens <= 16


def test_streamed_completion(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": SERVED_NAME, "prompt": "Models are served",
                              "max_tokens": 8, "temperature": 0,
                              "extra_body": {"ignore_eos": True}}
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_string_cuts_the_text(client: openai.OpenAI) -> None:
    base: dict[str, Any] = {"model": SERVED_NAME, "prompt": "The capital of France is",
                            "max_tokens": 24, "temperature": 0,
                            "extra_body": {"ignore_eos": True}}
    full = client.completions.create(**base).choices[0].text
    candidates = [full[i:i + 2] for i in range(3, len(full) - 2)
                  if full[i:i + 2].strip() and "\ufffd" not in full[i:i + 2]]
    if not candidates:
        pytest.skip(f"random text without a usable stop string: {full!r}")
    stop = candidates[0]
    cut = client.completions.create(stop=[stop], **base).choices[0]
    assert cut.text == full[:full.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = list(client.completions.create(stop=[stop], stream=True, **base))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.text


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 12,
                              "temperature": 1.0, "top_p": 0.9, "seed": 1234,
                              "extra_body": {"ignore_eos": True}}
    first = client.completions.create(**kwargs).choices[0].text
    assert client.completions.create(**kwargs).choices[0].text == first


def test_sixteen_concurrent_requests_all_answered_while_health_stays_up(
        server: Server) -> None:
    """16 clients at once: every one answered, batches of more than one formed, and /health and
    /metrics answer while the model is generating (the event loop is never blocked)."""
    client: openai.OpenAI = server.openai()
    before = httpx.get(f"{server.url}/metrics").text
    batches_before = metric(before, "modeldeploy_serve_batch_size_count")
    busy_seen: list[float] = []
    health_codes: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            health_codes.append(httpx.get(f"{server.url}/health", timeout=30).status_code)
            text = httpx.get(f"{server.url}/metrics", timeout=30).text
            busy_seen.append(metric(text, "modeldeploy_serve_running_sequences"))

    def ask(i: int) -> tuple[int, str, int]:
        if i % 2:
            r = client.chat.completions.create(
                model=SERVED_NAME, max_tokens=48, temperature=0.0 if i % 4 == 1 else 0.8,
                messages=[{"role": "user", "content": f"Request number {i}"}],
                extra_body={"ignore_eos": True})
            text = r.choices[0].message.content or ""
        else:
            r2 = client.completions.create(model=SERVED_NAME, prompt=f"Prompt {i}:",
                                           max_tokens=48, temperature=0,
                                           extra_body={"ignore_eos": True})
            text = r2.choices[0].text
            r = r2  # type: ignore[assignment]
        assert r.usage is not None
        return i, text, r.usage.completion_tokens

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(ask, range(16)))
    finally:
        done.set()
        prober.join()
    assert sorted(i for i, _, _ in results) == list(range(16))
    assert all(tokens == 48 for _, _, tokens in results)
    assert health_codes and set(health_codes) == {200}
    assert max(busy_seen) >= 1, "no probe landed while a batch was running"
    after = httpx.get(f"{server.url}/metrics").text
    batches = metric(after, "modeldeploy_serve_batch_size_count") - batches_before
    from modeldeploy_serve.textmodel import per_row_stopping

    if per_row_stopping():
        assert 2 <= batches < 16, f"16 requests ran in {batches} batches"
    else:  # transformers < 4.39 (the VL2 image): one sequence per generate() call
        assert batches == 16
    assert metric(after, "modeldeploy_serve_queue_depth") == 0


def png_data_url() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


MSG = [{"role": "user", "content": "hi"}]
BAD_REQUESTS: list[tuple[str, str, Any, int, str | None]] = [
    ("not json", "/v1/chat/completions", b"{nope", 400, None),
    ("array body", "/v1/chat/completions", [1, 2], 400, None),
    ("empty body", "/v1/completions", b"", 400, None),
    ("no model", "/v1/chat/completions", {"messages": MSG}, 400, "model"),
    ("no messages", "/v1/chat/completions", {"model": SERVED_NAME}, 400, "messages"),
    ("empty messages", "/v1/chat/completions", {"model": SERVED_NAME, "messages": []}, 400,
     "messages"),
    ("messages not a list", "/v1/chat/completions", {"model": SERVED_NAME, "messages": "hi"},
     400, "messages"),
    ("unknown role", "/v1/chat/completions",
     {"model": SERVED_NAME, "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages.0.role"),
    ("temperature too high", "/v1/chat/completions",
     {"model": SERVED_NAME, "messages": MSG, "temperature": 7}, 400, "temperature"),
    ("max_tokens zero", "/v1/completions", {"model": SERVED_NAME, "prompt": "x", "max_tokens": 0},
     400, "max_tokens"),
    ("max_tokens a string", "/v1/completions",
     {"model": SERVED_NAME, "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("past the context", "/v1/completions",
     {"model": SERVED_NAME, "prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("prompt past the context", "/v1/completions",
     {"model": SERVED_NAME, "prompt": [5] * 600, "max_tokens": 1}, 400, None),
    ("token id out of range", "/v1/completions",
     {"model": SERVED_NAME, "prompt": [10 ** 9]}, 400, "prompt"),
    ("empty prompt list", "/v1/completions", {"model": SERVED_NAME, "prompt": []}, 400, "prompt"),
    ("too many stops", "/v1/completions",
     {"model": SERVED_NAME, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("n too large", "/v1/chat/completions", {"model": SERVED_NAME, "messages": MSG, "n": 1000},
     400, "n"),
    ("logprobs", "/v1/chat/completions",
     {"model": SERVED_NAME, "messages": MSG, "logprobs": True}, 400, "logprobs"),
    ("image to a text model", "/v1/chat/completions",
     {"model": SERVED_NAME, "messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": png_data_url()}}]}]}, 400,
     "messages.0.content"),
    ("remote image url", "/v1/chat/completions",
     {"model": SERVED_NAME, "messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, 400,
     "messages.0.content.0"),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-4o", "messages": MSG}, 404, "model"),
    ("unknown model, completions", "/v1/completions", {"model": "x", "prompt": "hi"}, 404,
     "model"),
    ("unknown route", "/v1/embeddings", {"model": SERVED_NAME, "input": "x"}, 404, None),
]


@pytest.mark.parametrize(("path", "body", "status", "param"),
                         [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_malformed_requests_get_openai_errors(server: Server, path: str, body: Any, status: int,
                                              param: str | None) -> None:
    if isinstance(body, bytes):
        r = httpx.post(server.url + path, content=body,
                       headers={"content-type": "application/json"})
    else:
        r = httpx.post(server.url + path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert err["param"] == param


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=SERVED_NAME, messages=MSG,  # type: ignore[arg-type]
                                       temperature=5)
    assert bad.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG)  # type: ignore[arg-type]


def test_client_going_away_mid_stream_leaves_the_server_serving(server: Server,
                                                                client: openai.OpenAI) -> None:
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                      json={"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 400,
                            "stream": True, "ignore_eos": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert any(line.startswith("data: ") for line in got)
    # the abandoned sequence is stopped; the next request is served normally
    resp = client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=3,
                                     extra_body={"ignore_eos": True})
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_metrics_in_prometheus_text(server: Server, client: openai.OpenAI) -> None:
    client.completions.create(model=SERVED_NAME, prompt="count me", max_tokens=2,
                              extra_body={"ignore_eos": True})
    httpx.post(f"{server.url}/v1/completions", json={"model": "nope", "prompt": "x"})
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "modeldeploy_serve_requests_total", endpoint="/v1/completions",
                  status="200") >= 1
    assert metric(text, "modeldeploy_serve_requests_total", endpoint="/v1/completions",
                  status="404") >= 1
    assert metric(text, "modeldeploy_serve_requests_total", endpoint="/v1/chat/completions",
                  status="400") >= 1
    assert metric(text, "modeldeploy_serve_generated_tokens_total") >= 2
    assert metric(text, "modeldeploy_serve_prompt_tokens_total") >= 1
    assert metric(text, "modeldeploy_serve_request_duration_seconds_count",
                  endpoint="/v1/completions") >= 1
    assert metric(text, "modeldeploy_serve_time_to_first_token_seconds_count") >= 1
    assert metric(text, "modeldeploy_serve_queue_depth") == 0
    assert metric(text, "modeldeploy_serve_model_loaded", model=SERVED_NAME) == 1


def test_server_still_healthy_after_everything(server: Server) -> None:
    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert "Traceback" not in server.log(), server.log()[-3000:]
