"""Real processes for the gateway's tests and benchmark: fake engines and the gateway itself,
each a subprocess on 127.0.0.1 with its log in a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), env.get("PYTHONPATH", "")) if p)
    return env


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return None


@dataclass
class Process:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log()[-3000:]}")
            if _http_status(self.url + path) == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _spawn(name: str, argv: list[str], port: int, log_dir: Path,
           env: dict[str, str] | None = None) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=env or _env(), start_new_session=True)
    return Process(name, port, proc, log_path)


def start_fake_engine(log_dir: Path, model: str, replica: str, *extra: str,
                      chunks: int = 8, chunk_delay: float = 0.0) -> Process:
    port = free_port()
    engine = _spawn(f"engine-{replica}", [
        sys.executable, str(FAKE_ENGINE), "--port", str(port), "--model", model,
        "--replica", replica, "--chunks", str(chunks), "--chunk-delay", str(chunk_delay),
        *extra], port, log_dir)
    engine.wait_http("/health")
    return engine


def engine_stats(engine: Process) -> dict[str, Any]:
    import json

    with urllib.request.urlopen(engine.url + "/stats", timeout=5) as response:
        stats: dict[str, Any] = json.loads(response.read())
        return stats


@dataclass
class Gateway(Process):
    metrics_port: int = 0

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def openai(self, api_key: str = "none", **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.v1, api_key=api_key, max_retries=0,
                      timeout=kwargs.pop("timeout", 60), **kwargs)

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("modeldeploy_gateway_"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def start_gateway(kubeconfig: Path, log_dir: Path, *args: str, namespace: str | None = None,
                  timeout: float = 60) -> Gateway:
    port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "modeldeploy.cli", "gateway", "--host", "127.0.0.1",
            "--port", str(port), "--metrics-port", str(metrics_port), *args]
    if namespace:
        argv += ["--namespace", namespace]
    env = {**_env(), "KUBECONFIG": str(kubeconfig)}
    log_path = log_dir / "gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)
    gateway = Gateway("gateway", port, proc, log_path, metrics_port)
    gateway.wait_http("/readyz", timeout=timeout)
    return gateway
