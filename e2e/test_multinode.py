"""A model larger than one node, served by a LeaderWorkerSet that the real LWS controller runs.

The cluster of `lws_cluster` has the LeaderWorkerSet controller (its CRDs, its webhooks on
127.0.0.1) and two 8 x 40 GB nodes beside the usual ones. deepseek-v2-chat 236B in bf16 on
40 GB GPUs needs 15 of them: one replica is a group of two pods, 8 GPUs each, on two nodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from helpers import (
    MD,
    apply,
    condition,
    get,
    items,
    lite,
    model_deployment,
    wait_available,
    wait_condition,
    wait_for,
)
from operator_process import OperatorProcess

LWS = "leaderworkersets.leaderworkerset.x-k8s.io"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
EIGHT_GPU_NODES = {"gpu-8x80", "gpu-8x40-a", "gpu-8x40-b"}
SHARED = {"accessMode": "ReadWriteMany"}


def big(name: str, nodes: int | None = None, **extra: Any) -> dict[str, Any]:
    gpu: dict[str, Any] = {"memoryGiB": 40, **({"nodes": nodes} if nodes else {})}
    return model_deployment(name, model="deepseek-v2-chat", sizeInBillions=236, gpu=gpu,
                            **extra)


@pytest.fixture
def lws_operator(lws_cluster: Cluster, lws_crd: None, lws_namespace: str,
                 tmp_path: Path) -> Iterator[OperatorProcess]:
    running = OperatorProcess(lws_cluster, lws_namespace, tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def group_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = items(cluster, "pods", namespace, "-l", f"modeldeploy.dev/deployment={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    (engine,) = [c for c in pod["spec"]["containers"] if c["name"] == "engine"]
    return {e["name"]: e.get("value", "") for e in engine.get("env") or []}


def two_ready_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]] | None:
    pods = group_pods(cluster, namespace, name)
    ready = [p for p in pods if condition(p, "Ready").get("status") == "True"]
    return ready if len(pods) == 2 and len(ready) == 2 else None


def test_236b_on_40gb_gpus_is_a_leader_worker_set_across_two_nodes(
        lws_cluster: Cluster, lws_namespace: str, lws_operator: OperatorProcess) -> None:
    cluster, ns = lws_cluster, lws_namespace
    apply(cluster, ns, big("v2", cache=SHARED))
    wait_available(cluster, ns, "v2", timeout=180)

    md = get(cluster, MD, ns, "v2")
    assert md is not None and md["status"]["phase"] == "Ready"
    resolved = md["status"]["resolved"]
    assert resolved["split"] == "2 nodes x 8 GPUs, TP 8 x PP 2"
    assert (resolved["nodesPerReplica"], resolved["gpusPerReplica"],
            resolved["tensorParallelSize"], resolved["pipelineParallelSize"]) == (2, 16, 8, 2)
    assert "2 nodes x 8 GPUs, TP 8 x PP 2 per replica" in condition(md, "Resolved")["message"]
    wide = cluster.kubectl("get", MD, "v2", "-n", ns, "-o", "wide").stdout
    assert "2 nodes x 8 GPUs, TP 8 x PP 2" in wide, wide

    lws = get(cluster, LWS, ns, "v2")
    assert lws is not None
    template = lws["spec"]["leaderWorkerTemplate"]
    assert (template["size"], template["restartPolicy"], lws["spec"]["startupPolicy"]) == \
        (2, "RecreateGroupOnPodRestart", "LeaderReady")
    assert get(cluster, "deployment", ns, "v2") is None

    pods = wait_for("the leader and the worker Ready", lambda: two_ready_pods(cluster, ns, "v2"))
    by_index = {p["metadata"]["labels"][WORKER_INDEX]: p for p in pods}
    assert set(by_index) == {"0", "1"}
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2 and nodes <= EIGHT_GPU_NODES, nodes
    leader_address = f"v2-0.v2.{ns}"
    for index, pod in by_index.items():
        env = env_of(pod)  # set by the LeaderWorkerSet controller's pod webhook
        assert env["LWS_LEADER_ADDRESS"] == leader_address, env
        assert env["LWS_GROUP_SIZE"] == "2"
        assert env["LWS_WORKER_INDEX"] == index
        (engine,) = pod["spec"]["containers"]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == "8"
        command = engine["command"]
        assert command[command.index("--node-rank") + 1] == \
            ("0" if index == "0" else "$(LWS_WORKER_INDEX)")
        assert command[command.index("--master-addr") + 1] == "$(LWS_LEADER_ADDRESS)"
        assert ("--headless" in command) == (index != "0")
        assert ("readinessProbe" in engine) == (index == "0")
        assert any(v.get("emptyDir", {}).get("medium") == "Memory"
                   for v in pod["spec"]["volumes"])
    service = get(cluster, "service", ns, "v2")
    assert service is not None
    assert service["spec"]["selector"] == {"modeldeploy.dev/deployment": "v2", WORKER_INDEX: "0"}

    # a worker pod deleted: the controller recreates the whole group (the leader too)
    old = {p["metadata"]["uid"] for p in pods}
    cluster.kubectl("delete", "pod", by_index["1"]["metadata"]["name"], "-n", ns,
                    "--wait=false")

    def recreated() -> list[dict[str, Any]] | None:
        fresh = two_ready_pods(cluster, ns, "v2")
        return fresh if fresh and not {p["metadata"]["uid"] for p in fresh} & old else None

    wait_for("a new group (leader and worker)", recreated, timeout=120)
    wait_available(cluster, ns, "v2", timeout=120)


def test_a_group_that_cannot_be_placed_is_unschedulable_with_the_schedulers_reason(
        lws_cluster: Cluster, lws_namespace: str, lws_operator: OperatorProcess) -> None:
    """Three nodes of 8 x 40 GB or more exist; a group of four cannot be placed."""
    cluster, ns = lws_cluster, lws_namespace
    apply(cluster, ns, big("v2-wide", nodes=4, cache=SHARED))
    unschedulable = wait_condition(cluster, ns, "v2-wide", "Available", "Unschedulable",
                                   timeout=180)
    assert "no node fits" in unschedulable["message"]
    md = get(cluster, MD, ns, "v2-wide")
    assert md is not None and md["status"]["phase"] == "Pending"
    assert md["status"]["resolved"]["split"] == "4 nodes x 4 GPUs, TP 4 x PP 4"


def test_a_read_write_once_cache_is_refused_and_nothing_is_created(
        lws_cluster: Cluster, lws_namespace: str, lws_operator: OperatorProcess) -> None:
    cluster, ns = lws_cluster, lws_namespace
    apply(cluster, ns, big("v2-rwo"))
    resolved = wait_condition(cluster, ns, "v2-rwo", "Resolved", "NoGPUFits")
    assert resolved["status"] == "False"
    assert "cache.accessMode is ReadWriteOnce: set cache.accessMode: ReadWriteMany" in \
        resolved["message"]
    for storage in ("NFS", "CephFS", "EFS", "Filestore", "Lustre"):
        assert storage in resolved["message"]
    md = get(cluster, MD, ns, "v2-rwo")
    assert md is not None and md["status"]["phase"] == "Invalid"
    time.sleep(2)
    for kind in ("pvc", "jobs", "deployments", LWS, "services", "pods"):
        assert items(cluster, kind, ns) == [], kind


def test_a_one_node_model_on_the_same_cluster_still_gets_a_deployment(
        lws_cluster: Cluster, lws_namespace: str, lws_operator: OperatorProcess) -> None:
    cluster, ns = lws_cluster, lws_namespace
    apply(cluster, ns, lite("small"))
    wait_available(cluster, ns, "small")
    assert get(cluster, "deployment", ns, "small") is not None
    assert items(cluster, LWS, ns) == []
    service = get(cluster, "service", ns, "small")
    assert service is not None
    assert service["spec"]["selector"] == {"modeldeploy.dev/deployment": "small"}


def test_without_the_leader_worker_set_crd_the_operator_says_what_to_install(
        cluster: Cluster, crd: None, namespace: str, tmp_path: Path) -> None:
    """The plain cluster has no LeaderWorkerSet CRD: the operator starts, serves one-node
    models, and a multi-node one waits with a condition that names what to install."""
    assert cluster.kubectl("get", "crd", LWS, check=False).returncode != 0
    operator = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        apply(cluster, namespace, lite("small"))
        apply(cluster, namespace, big("v2", cache=SHARED))
        wait_available(cluster, namespace, "small")
        missing = wait_condition(cluster, namespace, "v2", "Available",
                                 "LeaderWorkerSetMissing", timeout=120)
        assert "install LeaderWorkerSet (version v0.9.0 or later" in missing["message"]
        md = get(cluster, MD, namespace, "v2")
        assert md is not None and md["status"]["phase"] == "Pending"
        assert condition(md, "CacheReady")["status"] == "True"
        assert get(cluster, "deployment", namespace, "v2") is None
        assert operator.healthy()
    finally:
        operator.stop()


def test_with_the_charts_default_rbac_the_operator_serves_one_node_models_and_says_what_to_grant(
        lws_cluster: Cluster, lws_crd: None, lws_namespace: str, tmp_path: Path) -> None:
    """LeaderWorkerSet installed, but the operator's RBAC (the chart's default) does not cover
    it: no watch that RBAC would refuse (it would hold every other handler back); one-node
    models are served, a multi-node one says what to grant."""
    cluster, ns = lws_cluster, lws_namespace
    chart = Path(__file__).resolve().parent.parent / "charts" / "modeldeploy"
    rendered = cluster.helm("template", "md", str(chart), "--namespace", ns).stdout
    (role,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRole"]
    assert not any("leaderworkerset.x-k8s.io" in r["apiGroups"] for r in role["rules"])
    name = f"{ns}-operator"
    role["metadata"] = {"name": name}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
    cluster.kubectl("create", "serviceaccount", "operator", "-n", ns)
    cluster.kubectl("create", "clusterrolebinding", name, f"--clusterrole={name}",
                    f"--serviceaccount={ns}:operator")
    kubeconfig = cluster.service_account_kubeconfig(ns, "operator")
    operator = OperatorProcess(cluster, ns, tmp_path, kubeconfig=kubeconfig).start()
    try:
        apply(cluster, ns, lite("small"))
        apply(cluster, ns, big("v2", cache=SHARED))
        wait_available(cluster, ns, "small")
        waiting = wait_condition(cluster, ns, "v2", "Available", "LeaderWorkerSetMissing",
                                 timeout=120)
        assert "RBAC does not let the operator manage" in waiting["message"]
        assert "rbac.leaderWorkerSets=true" in waiting["message"]
        assert items(cluster, LWS, ns) == []
        assert "forbidden" not in operator.log().lower()
    finally:
        operator.stop()
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)
