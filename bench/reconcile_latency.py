"""Benchmark: how fast the operator turns ModelDeployments into children, against a floor, on
the real control plane of e2e/ (etcd, kube-apiserver, controller-manager, scheduler, kwok).

    python bench/reconcile_latency.py [--counts 100 1000] [--quiet-seconds 300]

For each count N, in two namespaces of the same cluster:
- floor: N ModelDeployments are created and a plain client (lightkube, 16 threads: the
  operator's concurrency) server-side-applies the same children (claim, download Job, Service)
  and writes a status, with no caches, no queue and no decisions: the least any
  implementation must do;
- operator: N ModelDeployments are created and the operator (`modeldeploy run`) does it.
For both it records, per object, the time from its create request returning to the moment all
three children exist (seen through watches), and prints p50/p99/total and operator/floor
ratios. Each object has its own weights (its own claim) and replicas 0 (no GPU pod), so the
cluster settles once the downloads (kwok pods) complete.
After the operator's run settles it counts the operator's own API requests over a quiet
window (writes; reads per object per hour), its resident memory, then restarts it and times
how long the new process takes to re-check every object, and how many children it wrote.
A figure, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import queue
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
from lightkube.types import PatchType  # noqa: E402

from harness import Cluster, start_cluster  # noqa: E402
from modeldeploy.api import ModelDeploymentSpec  # noqa: E402
from modeldeploy.catalog import builtin_catalog  # noqa: E402
from modeldeploy.config import OperatorConfig  # noqa: E402
from modeldeploy.objects import Owner, Owners  # noqa: E402
from modeldeploy.plan import make_plan  # noqa: E402
from modeldeploy.render import render  # noqa: E402
from modeldeploy.runtime.kube import ModelDeploymentResource  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

CHILD_KINDS = {"PersistentVolumeClaim": PersistentVolumeClaim, "Job": Job, "Service": Service}
MODELS = [("deepseek-v2-chat", 16), ("deepseek-vl2", 3), ("qwen2.5-instruct", 7),
          ("llama-3.1-instruct", 8), ("mistral-instruct-v0.3", 7)]
WORKERS = 16  # the operator's MAX_CONCURRENT_RECONCILES
Obj = dict[str, Any]


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


class Floor:
    """The plain client: for each created ModelDeployment, apply its children and a status."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.catalog, self.config = builtin_catalog(), OperatorConfig()
        self.work: queue.Queue[Obj | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WORKERS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for _ in self.threads:
            self.work.put(None)

    def _run(self) -> None:
        while (md := self.work.get()) is not None:
            meta = md["metadata"]
            spec = ModelDeploymentSpec.model_validate(md["spec"])
            plan = make_plan(meta["name"], meta["namespace"], spec, self.catalog, self.config)
            me = Owner(meta["name"], meta["uid"])
            for obj in render(plan, owners=Owners.of(me, [me])):
                if obj["kind"] != "Deployment":
                    self.client.apply(codecs.from_dict(obj), force=True)
            self.client.patch(ModelDeploymentResource.Status, meta["name"],
                              {"status": {"phase": "Downloading"}},
                              namespace=meta["namespace"], patch_type=PatchType.MERGE)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def create_all(client: Client, namespace: str, count: int, floor: Floor | None
               ) -> dict[str, float]:
    created: dict[str, float] = {}
    for i in range(count):
        model, size = MODELS[i % len(MODELS)]
        name = f"md-{i:04d}"
        made = client.create(codecs.from_dict({
            "apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": model, "sizeInBillions": size, "revision": f"bench-{i}",
                     "replicas": 0}}))
        created[name] = time.monotonic()
        if floor is not None:
            floor.work.put(made.to_dict() if hasattr(made, "to_dict") else dict(made))
    return created


def latencies(watcher: ChildWatcher, created: dict[str, float], began: float,
              timeout: float = 900) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    done: dict[str, float] = {}
    last = began
    while len(done) < len(created) and time.monotonic() < deadline:
        for name, start in created.items():
            if name not in done and (finished := watcher.complete(name)) is not None:
                done[name] = finished - start
                last = max(last, finished)
        time.sleep(0.2)
    values = list(done.values())
    return {"done": len(values), "p50_s": statistics.median(values),
            "p99_s": percentile(values, 0.99), "total_s": last - began}


def measure(client: Client, cluster: Cluster, namespace: str, count: int, floor: bool,
            workdir: Path) -> tuple[dict[str, float], OperatorProcess | None]:
    cluster.kubectl("create", "namespace", namespace)
    watcher = ChildWatcher(client, namespace)
    watcher.start()
    plain = Floor(client) if floor else None
    operator = None
    if plain is not None:
        plain.start()
    else:
        operator = OperatorProcess(cluster, namespace, workdir).start()
    began = time.monotonic()
    created = create_all(client, namespace, count, plain)
    result = latencies(watcher, created, began)
    watcher.stop.set()
    if plain is not None:
        plain.stop()
    return result, operator


def requests_by_verb(operator: OperatorProcess) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, value in operator.metrics().items():
        if key.startswith("modeldeploy_api_requests_total"):
            verb = key.split('verb="', 1)[1].split('"', 1)[0]
            totals[verb] = totals.get(verb, 0) + value
    return totals


def counter(operator: OperatorProcess, name: str) -> float:
    return sum(v for k, v in operator.metrics().items() if k.startswith(name))


def settle(cluster: Cluster, namespace: str, count: int, timeout: float = 1200) -> float:
    """Waits until every ModelDeployment shows phase ScaledToZero (replicas 0: the cache is
    complete and nothing more is to come)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        listed = json.loads(cluster.kubectl("get", "modeldeployments", "-n", namespace,
                                            "-o", "json").stdout)["items"]
        ready = sum(1 for md in listed
                    if (md.get("status") or {}).get("phase") == "ScaledToZero")
        if ready == count:
            return time.monotonic() - began
        time.sleep(2)
    raise TimeoutError(f"only some of {count} ModelDeployments settled in {timeout}s")


def steady_state(operator: OperatorProcess, count: int, quiet: float) -> dict[str, float]:
    before = requests_by_verb(operator)
    time.sleep(quiet)
    after = requests_by_verb(operator)
    delta = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
    reads = delta.get("get", 0) + delta.get("list", 0)
    writes = delta.get("apply", 0) + delta.get("delete", 0) + delta.get("patch", 0)
    assert operator.process is not None
    return {"quiet_s": quiet, "writes": writes,
            "reads_per_object_hour": reads / count * 3600 / quiet,
            "rss_mib": rss_mib(operator.process.pid)}


def restart(cluster: Cluster, namespace: str, count: int, workdir: Path) -> dict[str, float]:
    began = time.monotonic()
    operator = OperatorProcess(cluster, namespace, workdir).start()
    try:
        while counter(operator, "modeldeploy_reconciles_total") < count:
            time.sleep(0.2)
        took = time.monotonic() - began
        time.sleep(2)
        assert operator.process is not None
        return {"recheck_all_s": took,
                "child_writes": counter(operator, "modeldeploy_child_writes_total"),
                "status_writes": counter(operator, "modeldeploy_status_writes_total"),
                "rss_mib_after_restart": rss_mib(operator.process.pid)}
    finally:
        operator.stop()


def line(label: str, values: dict[str, float]) -> str:
    return label + " " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--quiet-seconds", type=float, default=300,
                        help="steady-state window after the largest count settles")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp) / "cluster")
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            "crd/modeldeployments.modeldeploy.dev")
            client = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
            for count in args.counts:
                workdir = Path(tmp) / f"run-{count}"
                workdir.mkdir()
                floor, _ = measure(client, cluster, f"floor-{count}", count, True, workdir)
                print(line(f"floor    n={count}", floor), flush=True)
                ours, operator = measure(client, cluster, f"op-{count}", count, False, workdir)
                assert operator is not None
                print(line(f"operator n={count}", ours), flush=True)
                print(line(f"ratio    n={count}", {
                    k: ours[k] / floor[k] for k in ("p50_s", "p99_s", "total_s")}), flush=True)
                settled = settle(cluster, f"op-{count}", count)
                print(line(f"settled  n={count}", {"settle_s": settled}), flush=True)
                if count == max(args.counts):
                    print(line(f"steady   n={count}",
                               steady_state(operator, count, args.quiet_seconds)), flush=True)
                operator.stop()
                print(line(f"restart  n={count}", restart(cluster, f"op-{count}", count,
                                                         workdir)), flush=True)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
