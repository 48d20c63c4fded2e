"""What the status says when the engine's pods cannot be created or started, and the quiet
cases: replicas 0, and a namespace being deleted under its ModelDeployments."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import Cluster
from helpers import MD, apply, get, items, lite, wait_available, wait_condition, wait_for
from operator_process import OperatorProcess


def _warnings(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return items(cluster, "events", namespace, "--field-selector=involvedObject.kind="
                 f"ModelDeployment,involvedObject.name={name},type=Warning")


def test_a_gpu_quota_is_reported_with_the_api_servers_words(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "gpus"},
                               "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}})
    apply(cluster, namespace, lite("quota"))
    refused = wait_condition(cluster, namespace, "quota", "Available", "QuotaExceeded",
                             timeout=90)
    assert refused["status"] == "False"
    assert "exceeded quota: gpus" in refused["message"]
    assert "limited: requests.nvidia.com/gpu=0" in refused["message"]
    md = get(cluster, MD, namespace, "quota")
    assert md is not None and md["status"]["phase"] == "Pending"
    wait_for("a QuotaExceeded Warning", lambda: [
        w for w in _warnings(cluster, namespace, "quota") if w["reason"] == "QuotaExceeded"])
    # the quota raised: the same ModelDeployment becomes Available with no change of its own
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "gpus"},
                               "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}})
    wait_available(cluster, namespace, "quota", timeout=120)


@pytest.mark.parametrize(("outcome", "reason", "said"), [
    ("image-pull", "ImagePullBackOff", "Back-off pulling image"),
    ("secret-missing", "CreateContainerConfigError", 'secret "api-keys" not found'),
])
def test_a_container_that_cannot_start_is_reported(
        cluster: Cluster, namespace: str, operator: OperatorProcess, outcome: str, reason: str,
        said: str) -> None:
    apply(cluster, namespace, lite("stuck", podAnnotations={
        "e2e.modeldeploy.dev/outcome": outcome}, env=[{"name": "API_KEY", "valueFrom": {
            "secretKeyRef": {"name": "api-keys", "key": "key"}}}]))
    found = wait_condition(cluster, namespace, "stuck", "Available", reason, timeout=90)
    assert found["status"] == "False" and said in found["message"]
    md = get(cluster, MD, namespace, "stuck")
    assert md is not None and md["status"]["phase"] == "Failed"
    wait_for(f"a {reason} Warning", lambda: [
        w for w in _warnings(cluster, namespace, "stuck") if w["reason"] == reason])


def test_zero_replicas_is_scaled_to_zero_without_a_warning(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("idle", replicas=0))
    wait_condition(cluster, namespace, "idle", "Available", "ScaledToZero", timeout=90)
    md = get(cluster, MD, namespace, "idle")
    assert md is not None and md["status"]["phase"] == "ScaledToZero"
    assert md["status"]["replicas"] == 0
    deployment = get(cluster, "deployment", namespace, "idle")
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert _warnings(cluster, namespace, "idle") == []


def test_a_namespace_being_deleted_is_left_quietly(cluster: Cluster, crd: None,
                                                   tmp_path: Path) -> None:
    namespace = f"doomed-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    operator = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        names = [f"m{i}" for i in range(4)]
        for name in names[:2]:
            apply(cluster, namespace, lite(name))
        for name in names[:2]:
            wait_available(cluster, namespace, name, timeout=120)
        for name in names[2:]:  # just made when the namespace goes
            apply(cluster, namespace, lite(name, revision="main"))
        logged = len(operator.log())
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        # before the namespace controller gets to them (it waits a few seconds), the Services
        # go: the operator would make them again, which a terminating namespace refuses
        cluster.kubectl("delete", "services", "--all", "-n", namespace, "--wait=false")
        wait_for("the namespace to be gone", lambda: cluster.kubectl(
            "get", "namespace", namespace, check=False).returncode != 0, timeout=120)
        time.sleep(3)  # what the operator does once the last objects are gone
        after = operator.log()[logged:]
        errors = [line for line in after.splitlines()
                  if '"severity": "error"' in line or "Traceback" in line]
        assert errors == [], "\n".join(errors[:20])
        assert operator.process is not None and operator.process.poll() is None
    finally:
        operator.stop()
