"""Starting and stopping the real server as a subprocess on 127.0.0.1 (tests and bench)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVE_DIR = Path(__file__).resolve().parents[1]  # the distribution's folder (serve/)
SERVED_NAME = "deepseek-v2-tiny"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SERVE_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    return env


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    health_seen: list[int] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def openai(self) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.v1, api_key="not-needed", max_retries=0, timeout=120)


def start_server(model_dir: Path, log_path: Path, *extra: str,
                 wait_healthy: bool = True, timeout: float = 180) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "modeldeploy_serve", "--model", str(model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           *extra]
    log_file = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=server_env())
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    if not wait_healthy:
        return server
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            r = httpx.get(f"{server.url}/health", timeout=5)
            server.health_seen.append(r.status_code)
            if r.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.log()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
