"""Benchmark: how fast the operator turns ModelDeployments into children, on the real control
plane of e2e/ (etcd, kube-apiserver, controller-manager, scheduler, kwok GPU nodes).

    python bench/reconcile_latency.py [--counts 100 1000]

For each count N it creates N ModelDeployments as fast as the API server takes them (each with
its own weights, so each gets its own claim, download Job and Service), and records for each
the time from its create request returning to the moment all three children exist (seen
through watches). It prints p50/p90/p99/max of that latency, the time until all N are done,
the operator's API requests per reconcile (from its own metrics) and its resident memory.
A figure, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "e2e"), str(ROOT / "e2e" / "cluster")]

from lightkube import Client, KubeConfig, codecs  # noqa: E402
from lightkube.resources.batch_v1 import Job  # noqa: E402
from lightkube.resources.core_v1 import PersistentVolumeClaim, Service  # noqa: E402

from harness import Cluster, start_cluster  # noqa: E402
from modeldeploy.kube import ModelDeploymentResource  # noqa: E402,F401  (registers the kind)
from operator_process import OperatorProcess  # noqa: E402

CHILD_KINDS = {"PersistentVolumeClaim": PersistentVolumeClaim, "Job": Job, "Service": Service}
MODELS = [("deepseek-v2-chat", 16), ("deepseek-vl2", 3), ("qwen2.5-instruct", 7),
          ("llama-3.1-instruct", 8), ("mistral-instruct-v0.3", 7)]


class ChildWatcher:
    """Records when each ModelDeployment's claim, Job and Service first appear."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.seen: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._watch, args=(kind,), daemon=True)
                        for kind in CHILD_KINDS]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _watch(self, kind: str) -> None:
        watch = self.client.watch(CHILD_KINDS[kind], namespace=self.namespace,
                                  labels={"app.kubernetes.io/managed-by": "modeldeploy"})
        try:
            for _event, obj in watch:
                owner = self._owner(kind, obj)
                if owner:
                    with self.lock:
                        self.seen.setdefault(owner, {}).setdefault(kind, time.monotonic())
                if self.stop.is_set():
                    return
        except Exception:
            if not self.stop.is_set():
                raise

    @staticmethod
    def _owner(kind: str, obj: Any) -> str | None:
        if kind == "Service":
            return str(obj.metadata.name)
        refs = obj.metadata.ownerReferences or []
        return str(refs[0].name) if refs else None

    def complete(self, name: str) -> float | None:
        with self.lock:
            times = self.seen.get(name, {})
            return max(times.values()) if len(times) == len(CHILD_KINDS) else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def run(cluster: Cluster, count: int, workdir: Path) -> dict[str, float]:
    namespace = f"bench-{count}"
    cluster.kubectl("create", "namespace", namespace)
    client = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
    operator = OperatorProcess(cluster, namespace, workdir).start()
    watcher = ChildWatcher(client, namespace)
    watcher.start()
    created: dict[str, float] = {}
    began = time.monotonic()
    for i in range(count):
        model, size = MODELS[i % len(MODELS)]
        name = f"md-{i:04d}"
        client.create(codecs.from_dict({  # a ModelDeploymentResource
            "apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": model, "sizeInBillions": size, "revision": f"bench-{i}"}}))
        created[name] = time.monotonic()
    arrival = time.monotonic() - began
    deadline = time.monotonic() + 600
    latencies: dict[str, float] = {}
    while len(latencies) < count and time.monotonic() < deadline:
        for name, start in created.items():
            if name not in latencies:
                done = watcher.complete(name)
                if done is not None:
                    latencies[name] = done - start
        time.sleep(0.2)
    total = time.monotonic() - began
    time.sleep(3)
    metrics = operator.metrics()
    requests = sum(v for k, v in metrics.items()
                   if k.startswith("modeldeploy_api_requests_total"))
    reconciles = sum(v for k, v in metrics.items()
                     if k.startswith("modeldeploy_reconciles_total"))
    assert operator.process is not None
    rss, peak = rss_mib(operator.process.pid)
    watcher.stop.set()
    operator.stop()
    values = list(latencies.values())
    return {"count": count, "done": len(values), "arrival_s": arrival, "all_done_s": total,
            "p50_s": statistics.median(values), "p90_s": percentile(values, 0.9),
            "p99_s": percentile(values, 0.99), "max_s": max(values),
            "reconciles": reconciles, "requests_per_reconcile": requests / reconciles,
            "rss_mib": rss, "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp) / "cluster")
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            "crd/modeldeployments.modeldeploy.dev")
            for count in args.counts:
                workdir = Path(tmp) / f"run-{count}"
                workdir.mkdir()
                result = run(cluster, count, workdir)
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in result.items()), flush=True)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
