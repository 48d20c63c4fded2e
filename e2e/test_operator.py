"""The operator against the real control plane: phases, scheduling, sharing, drift, restarts."""

from __future__ import annotations

import time
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
    phases,
    wait_available,
    wait_condition,
    wait_for,
)
from operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))














@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_seed_example_becomes_available(cluster: Cluster, namespace: str,
                                        operator: OperatorProcess, example: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    name = doc["metadata"]["name"]
    apply(cluster, namespace, example.read_text())
    wait_available(cluster, namespace, name)
    md = get(cluster, MD, namespace, name)
    assert md is not None
    assert md["status"]["phase"] == "Ready"
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert md["status"]["endpoint"] == f"http://{name}.{namespace}.svc.cluster.local:8000/v1"
    chain = wait_for("the phase events up to Ready", lambda: (
        lambda c: c if c[-1] == "Ready" else None)(phases(cluster, namespace, name)))
    assert chain[-3:] == ["Downloading", "Starting", "Ready"]
    warnings = items(cluster, "events", namespace,
                     "--field-selector=involvedObject.kind=ModelDeployment,"
                     f"involvedObject.name={name},type=Warning")
    assert warnings == [], [(w["reason"], w["message"]) for w in warnings]  # none on a normal start
    pods = items(cluster, "pods", namespace, "-l", f"modeldeploy.dev/deployment={name}")
    gpus = md["status"]["resolved"]["gpusPerReplica"]
    if gpus == 8:
        assert {p["spec"]["nodeName"] for p in pods} == {"gpu-8x80"}
    assert get(cluster, "service", namespace, name) is not None
    # the download Job is gone once the cache is complete; the claim records it
    assert items(cluster, "jobs", namespace) == []
    claim = get(cluster, "pvc", namespace, md["status"]["resolved"]["cacheClaim"])
    assert claim is not None
    assert claim["metadata"]["annotations"]["modeldeploy.dev/cache-complete"].startswith(
        "huggingface/deepseek-ai/")


def test_236b_waits_with_the_schedulers_reason_when_the_node_is_full(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    big = model_deployment("v2-a", model="deepseek-v2-chat", sizeInBillions=236)
    apply(cluster, namespace, big)
    wait_available(cluster, namespace, "v2-a")
    apply(cluster, namespace, {**big, "metadata": {"name": "v2-b"}})
    unschedulable = wait_condition(cluster, namespace, "v2-b", "Available", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in unschedulable["message"]
    md = get(cluster, MD, namespace, "v2-b")
    assert md is not None and md["status"]["phase"] == "Pending"
    warnings = items(cluster, "events", namespace,
                     "--field-selector=involvedObject.name=v2-b,reason=Unschedulable")
    assert warnings and warnings[0]["type"] == "Warning"


def test_unknown_model_is_invalid_and_creates_nothing(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, model_deployment("ghost", model="deepseek-v3",
                                               sizeInBillions=671))
    resolved = wait_condition(cluster, namespace, "ghost", "Resolved", "UnknownModel")
    assert resolved["status"] == "False"
    assert resolved["message"].startswith("model 'deepseek-v3' is not in the catalog")
    md = get(cluster, MD, namespace, "ghost")
    assert md is not None and md["status"]["phase"] == "Invalid"
    time.sleep(2)
    for kind in ("pvc", "jobs", "deployments", "services"):
        assert items(cluster, kind, namespace) == [], kind


def test_the_schema_refuses_what_it_can_say(cluster: Cluster, namespace: str,
                                            crd: None) -> None:
    bad = lite("bad", quantization="3-bit")
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-",
                              input=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0
    assert "format pytorch takes quantization none, 8-bit or 4-bit" in refused.stderr
    typo = lite("typo", gpus=2)
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-",
                              input=yaml.safe_dump(typo), check=False)
    assert refused.returncode != 0 and 'unknown field "spec.gpus"' in refused.stderr


def test_two_deployments_share_one_cache(cluster: Cluster, namespace: str,
                                         operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("one"))
    apply(cluster, namespace, lite("two", quantization="4-bit"))
    wait_available(cluster, namespace, "one")
    wait_available(cluster, namespace, "two")
    claims = items(cluster, "pvc", namespace)
    assert len(claims) == 1
    assert sorted(r["name"] for r in claims[0]["metadata"]["ownerReferences"]) == ["one", "two"]
    created = items(cluster, "events", namespace,
                    "--field-selector=involvedObject.kind=Job,reason=SuccessfulCreate")
    assert len({e["involvedObject"]["name"] for e in created}) == 1

    cluster.kubectl("delete", "-n", namespace, f"{MD}/one", "--wait=true")
    time.sleep(3)  # give the garbage collector its chance to (wrongly) take the claim
    assert len(items(cluster, "pvc", namespace)) == 1
    wait_for("one's Deployment to be collected",
             lambda: get(cluster, "deployment", namespace, "one") is None)
    cluster.kubectl("delete", "-n", namespace, f"{MD}/two", "--wait=true")
    wait_for("everything to be collected", lambda: all(
        not items(cluster, kind, namespace) for kind in ("pvc", "deployments", "services")))


def test_operator_killed_between_job_and_deployment(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    # the download takes 15 s: the operator is killed while it runs
    config = {"downloadPodAnnotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "15s"}}
    first = OperatorProcess(cluster, namespace, tmp_path, config=config).start()
    apply(cluster, namespace, lite("restart"))
    wait_for("the download Job", lambda: items(cluster, "jobs", namespace))
    first.kill()
    assert get(cluster, "deployment", namespace, "restart") is None
    restarted = OperatorProcess(cluster, namespace, tmp_path, config=config).start()
    try:
        wait_available(cluster, namespace, "restart")
    finally:
        restarted.stop()
    assert len(items(cluster, "pvc", namespace)) == 1
    assert len(items(cluster, "deployments", namespace)) == 1
    assert len(items(cluster, "replicasets", namespace)) == 1
    created = items(cluster, "events", namespace,
                    "--field-selector=involvedObject.kind=Job,reason=SuccessfulCreate")
    assert len({e["involvedObject"]["name"] for e in created}) == 1


def test_drift_is_repaired_and_a_no_op_writes_nothing(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    doc = lite("drift")
    apply(cluster, namespace, doc)
    wait_available(cluster, namespace, "drift")

    cluster.kubectl("delete", "service", "drift", "-n", namespace)
    wait_for("the Service to return", lambda: get(cluster, "service", namespace, "drift"))
    cluster.kubectl("set", "image", "-n", namespace, "deployment/drift", "engine=evil:1")
    wait_for("the image to be put back", lambda: (get(cluster, "deployment", namespace, "drift")
             or {})["spec"]["template"]["spec"]["containers"][0]["image"] != "evil:1")
    wait_available(cluster, namespace, "drift")
    time.sleep(2)

    def versions() -> dict[str, str]:
        found = {}
        for kind in (MD, "pvc", "deployments", "services"):
            for obj in items(cluster, kind, namespace):
                found[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        return found

    before, writes = versions(), operator.writes()
    apply(cluster, namespace, doc)
    time.sleep(5)
    assert versions() == before
    assert operator.writes() == writes


def test_spec_change_rolls_the_deployment(cluster: Cluster, namespace: str,
                                          operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("roll"))
    wait_available(cluster, namespace, "roll")
    apply(cluster, namespace, lite("roll", maxModelLen=4096))

    def rolled() -> bool:
        md = get(cluster, MD, namespace, "roll") or {}
        deployment = get(cluster, "deployment", namespace, "roll") or {}
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        return md.get("status", {}).get("observedGeneration") == 2 and \
            command[command.index("--max-model-len") + 1] == "4096"

    wait_for("the new template and observedGeneration 2", rolled)
    wait_available(cluster, namespace, "roll")


def test_missing_storage_class_is_reported(cluster: Cluster, namespace: str,
                                           operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("nostorage", cache={"storageClassName": "does-not-exist"}))
    pending = wait_condition(cluster, namespace, "nostorage", "CacheReady", "CachePending")
    assert 'storageclass.storage.k8s.io "does-not-exist" not found' in pending["message"]
    md = get(cluster, MD, namespace, "nostorage")
    assert md is not None and md["status"]["phase"] == "Pending"


def test_failed_download_is_reported(cluster: Cluster, namespace: str, tmp_path: Path,
                                     crd: None) -> None:
    failing = OperatorProcess(cluster, namespace, tmp_path, config={
        "downloadBackoffLimit": 0,
        "downloadPodAnnotations": {"e2e.modeldeploy.dev/outcome": "fail"}}).start()
    try:
        apply(cluster, namespace, lite("nodownload"))
        failed = wait_condition(cluster, namespace, "nodownload", "CacheReady",
                                "DownloadFailed")
    finally:
        failing.stop()
    assert "BackoffLimitExceeded" in failed["message"]
    md = get(cluster, MD, namespace, "nodownload")
    assert md is not None and md["status"]["phase"] == "Failed"
    assert get(cluster, "deployment", namespace, "nodownload") is None


@pytest.mark.parametrize(("outcome", "reason"), [("crashloop", "CrashLoopBackOff"),
                                                 ("oomkilled", "OOMKilled")])
def test_engine_failures_are_reported(cluster: Cluster, namespace: str,
                                      operator: OperatorProcess, outcome: str,
                                      reason: str) -> None:
    apply(cluster, namespace, lite("broken", podAnnotations={
        "e2e.modeldeploy.dev/outcome": outcome}))
    failed = wait_condition(cluster, namespace, "broken", "Available", reason)
    assert failed["status"] == "False"
    md = get(cluster, MD, namespace, "broken")
    assert md is not None and md["status"]["phase"] == "Failed"


def _job_creations(cluster: Cluster, namespace: str) -> set[str]:
    created = items(cluster, "events", namespace,
                    "--field-selector=involvedObject.kind=Job,reason=SuccessfulCreate")
    return {e["involvedObject"]["name"] for e in created}


def test_cached_weights_start_at_once_without_a_job(cluster: Cluster, namespace: str,
                                                    operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("first"))
    wait_available(cluster, namespace, "first")
    assert len(_job_creations(cluster, namespace)) == 1
    apply(cluster, namespace, lite("second", quantization="8-bit"))
    wait_available(cluster, namespace, "second")
    assert "Downloading" not in phases(cluster, namespace, "second")
    assert len(_job_creations(cluster, namespace)) == 1  # no second download
    assert items(cluster, "jobs", namespace) == []


def test_new_revision_gets_a_new_cache_and_the_old_one_is_pruned(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("rev", revision="aaaa"))
    wait_available(cluster, namespace, "rev")
    old_claim = (get(cluster, MD, namespace, "rev") or {})["status"]["resolved"]["cacheClaim"]
    apply(cluster, namespace, lite("rev", revision="bbbb"))

    def moved() -> str | None:
        md = get(cluster, MD, namespace, "rev") or {}
        claim = md.get("status", {}).get("resolved", {}).get("cacheClaim")
        return claim if claim and claim != old_claim else None

    new_claim = wait_for("the new cache claim in status", moved)
    wait_available(cluster, namespace, "rev")
    wait_for("the old claim to be pruned",
             lambda: get(cluster, "pvc", namespace, old_claim) is None)
    assert [c["metadata"]["name"] for c in items(cluster, "pvc", namespace)] == [new_claim]
    deployment = get(cluster, "deployment", namespace, "rev") or {}
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes
            if "persistentVolumeClaim" in v} == {new_claim}


def test_retained_cache_outlives_its_last_user(cluster: Cluster, namespace: str,
                                               operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("keeper", cache={"retainPolicy": "Retain"}))
    wait_available(cluster, namespace, "keeper")
    claim = (get(cluster, MD, namespace, "keeper") or {})["status"]["resolved"]["cacheClaim"]
    cluster.kubectl("delete", "-n", namespace, f"{MD}/keeper", "--wait=true")
    wait_for("the Deployment to be collected",
             lambda: get(cluster, "deployment", namespace, "keeper") is None)
    time.sleep(3)  # the garbage collector's chance to (wrongly) take the claim
    kept = get(cluster, "pvc", namespace, claim)
    assert kept is not None and not kept["metadata"].get("ownerReferences")
    # a new user of the same weights finds them complete: no download
    apply(cluster, namespace, lite("reuser", cache={"retainPolicy": "Retain"}))
    wait_available(cluster, namespace, "reuser")
    assert len(_job_creations(cluster, namespace)) == 1


def test_missing_hub_token_secret_is_reported(cluster: Cluster, namespace: str,
                                              tmp_path: Path, crd: None) -> None:
    # kwok plays the kubelet: the annotation makes it report what a kubelet reports for a pod
    # whose env names a Secret that does not exist (CreateContainerConfigError)
    config = {"downloadPodAnnotations": {"e2e.modeldeploy.dev/outcome": "secret-missing"}}
    running = OperatorProcess(cluster, namespace, tmp_path, config=config).start()
    try:
        apply(cluster, namespace, lite("gated", hubTokenSecretRef={"name": "hf-token"}))
        missing = wait_condition(cluster, namespace, "gated", "CacheReady", "SecretMissing")
    finally:
        running.stop()
    assert 'secret "hf-token" not found' in missing["message"]
    md = get(cluster, MD, namespace, "gated")
    assert md is not None and md["status"]["phase"] == "Pending"
    assert get(cluster, "deployment", namespace, "gated") is None
    warnings = items(cluster, "events", namespace,
                     "--field-selector=involvedObject.name=gated,reason=SecretMissing")
    assert warnings and warnings[0]["type"] == "Warning"


def test_ready_replicas_below_desired_is_degraded(cluster: Cluster, namespace: str,
                                                  operator: OperatorProcess) -> None:
    # two replicas of 236B need two 8-GPU nodes; the cluster has one
    apply(cluster, namespace, model_deployment("half", model="deepseek-v2-chat",
                                               sizeInBillions=236, replicas=2))

    def one_ready() -> dict[str, Any] | None:
        found = condition(get(cluster, MD, namespace, "half"), "Degraded")
        return found if found.get("message", "").startswith("1 of 2") else None

    degraded = wait_for("Degraded with one of two replicas ready", one_ready, timeout=90)
    assert degraded["status"] == "True" and degraded["reason"] == "ReplicasUnavailable"
    assert degraded["message"].startswith("1 of 2 replicas ready; no node fits: ")
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    md = get(cluster, MD, namespace, "half")
    assert md is not None
    assert condition(md, "Available")["status"] == "True"
    assert md["status"]["readyReplicas"] == 1 and md["status"]["replicas"] == 2
