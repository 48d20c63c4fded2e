"""vLLM (the CPU build at the pinned image's version) started as a process with exactly the
command line and environment of a rendered Deployment.

The test changes only what the pod's mounts and network provide (each volume mount's path -> a
folder here, --host/--port -> 127.0.0.1 and a free port) and adds CPU-only settings the operator
never renders (TEST_ONLY_ARGS, TEST_ONLY_ENV). The weights' claim is a folder laid out as the
download Job leaves it: the snapshot in weights/, then the completion marker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from pins import Pin
from seeds import Seed

from modeldeploy.cache.naming import MARKER_FILE
from modeldeploy.labels import HUB_ANNOTATION, MODEL_ID_ANNOTATION, REVISION_ANNOTATION
from modeldeploy.plan import WEIGHTS_DIR

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


def lay_out_cache(cache: Path, seed: Seed, write_weights: Callable[[Path], None]) -> None:
    """What the download Job leaves: the snapshot in weights/, then the marker, written last."""
    cache.mkdir(parents=True)
    write_weights(cache / WEIGHTS_DIR)
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


@contextmanager
def serve(pin: Pin, seed: Seed, root: Path,
          write_weights: Callable[[Path], None]) -> Iterator[Served]:
    """Lay out the claim, map the pod's mounts under root, start vLLM, wait for /health."""
    assert seed.engine == "vllm"
    cache = root / "cache"
    lay_out_cache(cache, seed, write_weights)
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
