"""The operator across restarts and API outages, on the real control plane."""

from __future__ import annotations

import time
from pathlib import Path

from harness import Cluster
from helpers import MD, apply, get, lite, wait_available, wait_for
from operator_process import OperatorProcess


def test_a_restart_rechecks_everything_and_writes_nothing(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    first = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        for name, quantization in (("a", "none"), ("b", "8-bit"), ("c", "4-bit")):
            apply(cluster, namespace, lite(name, quantization=quantization))
        for name in "abc":
            wait_available(cluster, namespace, name)
        time.sleep(2)  # the last status writes' echoes
        # settled: nothing more is read or written (the only reads were a Pending claim's
        # events, to say why it was pending)
        reads, writes = first.reads(), first.writes()
        time.sleep(5)
        assert (first.reads(), first.writes()) == (reads, writes)
    finally:
        first.stop()
    second = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        wait_for("every object re-checked",
                 lambda: second.counter("modeldeploy_reconciles_total") >= 3)
        time.sleep(2)
        assert second.writes() == 0
        assert second.reads() == 0
    finally:
        second.stop()


def test_an_api_server_outage_is_survived_without_a_restart(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    running = OperatorProcess(cluster, namespace, tmp_path,
                              args=("--resync-seconds", "2")).start()
    try:
        apply(cluster, namespace, lite("before"))
        wait_available(cluster, namespace, "before")
        assert running.process is not None
        pid = running.process.pid
        # the API server goes away while the operator is busy with a new object
        apply(cluster, namespace, lite("after", quantization="8-bit"))
        cluster.outage("kube-apiserver", seconds=20)
        resyncs = running.counter("modeldeploy_resync_passes_total")
        wait_available(cluster, namespace, "after", timeout=180)
        wait_for("a resync pass after the outage", lambda: running.counter(
            "modeldeploy_resync_passes_total") > resyncs, timeout=30)
        assert running.process.pid == pid and running.process.poll() is None
        assert wait_for("the liveness endpoint", running.healthy, timeout=30)
        # the outage may have cost the first one its ready pod (its node missed heartbeats):
        # whatever happened, its status follows what its Deployment says
        def truthful() -> bool:
            md = get(cluster, MD, namespace, "before") or {}
            deployment = get(cluster, "deployment", namespace, "before") or {}
            ready = deployment.get("status", {}).get("readyReplicas", 0)
            return bool(md.get("status", {}).get("readyReplicas") == ready)

        wait_for("the first one's status to match its Deployment", truthful)
    finally:
        running.stop()
