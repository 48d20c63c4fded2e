"""Run `modeldeploy run` as a real process against the test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness import Cluster
from helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")






class OperatorProcess:
    """One operator watching one namespace, with its log and metrics."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path,
                 config: dict[str, Any] | None = None,
                 kubeconfig: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.cluster, self.namespace, self.workdir = cluster, namespace, workdir
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.config_path = workdir / "operator-config.yaml"
        self.config_path.write_text(yaml.safe_dump(config or {}))
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.args = args

    def start(self) -> OperatorProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy.cli", "run", "--namespace", self.namespace,
                 "--config", str(self.config_path), "--metrics-port", str(self.metrics_port),
                 "--health-port", str(self.health_port), *self.args],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True)
        wait_for("the operator's metrics endpoint", self._metrics_up, timeout=30)
        return self

    def _metrics_up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{self.log()[-3000:]}")
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("modeldeploy_") and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def healthy(self) -> bool:
        """The liveness endpoint answers 200."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def counter(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def reads(self) -> float:
        """Every GET and LIST the operator's reconciles made."""
        return sum(v for k, v in self.metrics().items()
                   if k.startswith("modeldeploy_api_requests_total") and
                   any(f'verb="{verb}"' in k for verb in ("get", "list")))

    def writes(self) -> float:
        """Every write request the operator's reconciles made (creates, applies, updates,
        deletes, status; not the events it posts)."""
        return sum(v for k, v in self.metrics().items()
                   if k.startswith("modeldeploy_api_requests_total") and
                   'kind="Event"' not in k and any(
                       f'verb="{verb}"' in k
                       for verb in ("create", "apply", "update", "delete", "patch")))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a node failure or OOM would: no cleanup runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()






