"""The weight cache's lifecycle on the real control plane: a download shared by several
users, a revision change under a serving Deployment, a deleted claim, a shared claim made
smaller than asked, and a Job made under another operator config.

Download pods are played by kwok. Where a test needs the download to run until it says so,
the operator's config keeps them Running (kwok's pod-complete delay of ten minutes) and the
test finishes one by writing the pod's status as a kubelet would for a container that exited
0 (the Job controller then completes the Job, as for a real download)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Cluster
from helpers import MD, apply, condition, get, items, lite, wait_available, wait_for
from operator_process import OperatorProcess

SLOW = {"downloadPodAnnotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "600s",
                                   "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "600s"}}
IDENTITY = ("serviceaccount", "role", "rolebinding")


@pytest.fixture
def slow(cluster: Cluster, crd: None, namespace: str,
         tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator whose download pods run until the test finishes them."""
    running = OperatorProcess(cluster, namespace, tmp_path, config=SLOW).start()
    try:
        yield running
    finally:
        running.stop()


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (get(cluster, MD, namespace, name) or {}).get("status") or {}
    return status


def _claim_of(cluster: Cluster, namespace: str, name: str) -> str:
    claim: str = wait_for(f"{name}'s cache claim in status", lambda: _status(
        cluster, namespace, name).get("resolved", {}).get("cacheClaim"))
    return claim


def _owners(obj: dict[str, Any] | None) -> list[tuple[str, bool]]:
    return sorted((r["name"], bool(r.get("controller")))
                  for r in (obj or {}).get("metadata", {}).get("ownerReferences") or [])


def _job_pod(cluster: Cluster, namespace: str, job: str) -> dict[str, Any] | None:
    pods = [p for p in items(cluster, "pods", namespace, f"--selector=job-name={job}")
            if p["status"].get("phase") == "Running"]
    return pods[0] if pods else None


def _finish(cluster: Cluster, namespace: str, job: str) -> None:
    """The download pod's container exits 0, as its kubelet reports it."""
    pod = wait_for(f"{job}'s pod running", lambda: _job_pod(cluster, namespace, job))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    container = pod["spec"]["containers"][0]
    status = {"phase": "Succeeded", "conditions": [
        {"type": "Ready", "status": "False", "reason": "PodCompleted",
         "lastTransitionTime": stamp}],
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": False, "restartCount": 0, "started": False,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                     "startedAt": stamp, "finishedAt": stamp}}}]}
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace,
                    "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))


def _reason(cluster: Cluster, namespace: str, name: str, kind: str) -> str | None:
    return condition(get(cluster, MD, namespace, name), kind).get("reason")


def _events(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return items(cluster, "events", namespace,
                 f"--field-selector=involvedObject.name={name},reason={reason}")


def test_deleting_the_first_user_keeps_the_running_download(
        cluster: Cluster, namespace: str, slow: OperatorProcess) -> None:
    apply(cluster, namespace, lite("first"))
    claim = _claim_of(cluster, namespace, "first")
    job_name = f"{claim}-dl"
    job = wait_for("the download Job", lambda: get(cluster, "job", namespace, job_name))
    pod = wait_for("the download pod", lambda: _job_pod(cluster, namespace, job_name))
    assert _owners(job) == [("first", False)]

    apply(cluster, namespace, lite("second", quantization="8-bit"))  # the same weights
    both = [("first", False), ("second", False)]
    wait_for("the Job owned by both users", lambda: _owners(
        get(cluster, "job", namespace, job_name)) == both)
    for kind in ("pvc", *IDENTITY):
        name = claim if kind == "pvc" else job_name
        wait_for(f"the {kind} owned by both", lambda kind=kind, name=name: _owners(
            get(cluster, kind, namespace, name)) == both)
    updated = get(cluster, "job", namespace, job_name) or {}
    assert updated["metadata"]["uid"] == job["metadata"]["uid"]  # updated in place

    cluster.kubectl("delete", "-n", namespace, f"{MD}/first", "--wait=true")
    time.sleep(3)  # the garbage collector's chance to (wrongly) take the Job
    kept = get(cluster, "job", namespace, job_name)
    assert kept is not None and kept["metadata"]["uid"] == job["metadata"]["uid"]
    assert not kept["metadata"].get("deletionTimestamp")
    wait_for("the Job owned by the second user alone", lambda: _owners(
        get(cluster, "job", namespace, job_name)) == [("second", False)])
    for kind in IDENTITY:  # the download pod may still report its progress
        assert _owners(get(cluster, kind, namespace, job_name)) == [("second", False)]
    running = _job_pod(cluster, namespace, job_name)
    assert running is not None and running["metadata"]["uid"] == pod["metadata"]["uid"]
    assert _reason(cluster, namespace, "second", "CacheReady") == "Downloading"
    assert _status(cluster, namespace, "second")["phase"] == "Downloading"

    _finish(cluster, namespace, job_name)
    wait_available(cluster, namespace, "second")
    assert _reason(cluster, namespace, "second", "CacheReady") == "CacheComplete"
    created = items(cluster, "events", namespace,
                    "--field-selector=involvedObject.kind=Job,reason=SuccessfulCreate")
    assert len(created) == 1  # one download pod, never restarted


def test_a_revision_change_keeps_the_old_cache_under_the_serving_deployment(
        cluster: Cluster, namespace: str, slow: OperatorProcess) -> None:
    apply(cluster, namespace, lite("rev", revision="aaaa"))
    old_claim = _claim_of(cluster, namespace, "rev")
    _finish(cluster, namespace, f"{old_claim}-dl")
    wait_available(cluster, namespace, "rev")
    claim_before = get(cluster, "pvc", namespace, old_claim) or {}
    deployment_before = get(cluster, "deployment", namespace, "rev") or {}

    apply(cluster, namespace, lite("rev", revision="bbbb"))
    new_claim = wait_for("the new cache claim in status", lambda: (
        lambda claim: claim if claim and claim != old_claim else None)(
            _status(cluster, namespace, "rev").get("resolved", {}).get("cacheClaim")))
    wait_for("the new download", lambda: _job_pod(cluster, namespace, f"{new_claim}-dl"))
    cache = wait_for("CacheReady saying what serves meanwhile", lambda: (
        lambda c: c if c.get("reason") == "Downloading" and "serving" in c.get("message", "")
        else None)(condition(get(cluster, MD, namespace, "rev"), "CacheReady")))
    assert cache["status"] == "False"
    assert cache["message"].startswith(
        f"serving revision aaaa from cache {old_claim} while revision bbbb downloads: ")
    status = _status(cluster, namespace, "rev")
    assert status["phase"] == "Ready"
    assert condition({"status": status}, "Available")["status"] == "True"
    # the old claim and the Deployment are as they were
    claim_now = get(cluster, "pvc", namespace, old_claim) or {}
    assert claim_now["metadata"]["uid"] == claim_before["metadata"]["uid"]
    assert not claim_now["metadata"].get("deletionTimestamp")
    deployment_now = get(cluster, "deployment", namespace, "rev") or {}
    assert deployment_now["metadata"]["generation"] == deployment_before["metadata"]["generation"]
    assert deployment_now["spec"]["template"] == deployment_before["spec"]["template"]

    # a serving pod that restarts meanwhile starts again: its claim is there
    serving = items(cluster, "pods", namespace, "--selector=modeldeploy.dev/deployment=rev")
    assert len(serving) == 1
    cluster.kubectl("delete", "pod", serving[0]["metadata"]["name"], "-n", namespace)
    wait_for("the replacement pod ready", lambda: any(
        p["metadata"]["uid"] != serving[0]["metadata"]["uid"] and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or [])
        for p in items(cluster, "pods", namespace, "--selector=modeldeploy.dev/deployment=rev")))
    assert get(cluster, "pvc", namespace, old_claim) is not None

    # the new weights are complete: the Deployment moves, then the old claim goes
    _finish(cluster, namespace, f"{new_claim}-dl")
    wait_for("the Deployment on the new claim", lambda: {
        v["persistentVolumeClaim"]["claimName"]
        for v in (get(cluster, "deployment", namespace, "rev") or {})["spec"]["template"]
        ["spec"]["volumes"] if "persistentVolumeClaim" in v} == {new_claim})
    wait_for("the old claim to be pruned",
             lambda: get(cluster, "pvc", namespace, old_claim) is None)
    wait_available(cluster, namespace, "rev")
    assert _reason(cluster, namespace, "rev", "CacheReady") == "CacheComplete"


def test_a_second_user_asking_for_a_bigger_cache_is_told(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    running = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        apply(cluster, namespace, lite("small", cache={"size": "40Gi"}))
        wait_available(cluster, namespace, "small")
        claim = _claim_of(cluster, namespace, "small")
        apply(cluster, namespace, lite("big", quantization="8-bit", cache={"size": "80Gi"}))
        wait_available(cluster, namespace, "big")
        cache = wait_for("big's CacheReady saying the claim's size", lambda: (
            lambda c: c if "was made with" in c.get("message", "") else None)(
                condition(get(cluster, MD, namespace, "big"), "CacheReady")))
        assert (cache["status"], cache["reason"]) == ("True", "CacheComplete")
        assert f"cache claim {claim} is shared and was made with size 40Gi; this spec asks " \
               "for size 80Gi" in cache["message"]
        warnings = wait_for("a CacheClaimDiffers event", lambda: _events(
            cluster, namespace, "big", "CacheClaimDiffers"))
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        pvc = get(cluster, "pvc", namespace, claim) or {}
        assert pvc["spec"]["resources"]["requests"]["storage"] == "40Gi"  # left as it was
        assert _owners(pvc) == [("big", False), ("small", False)]
        small = condition(get(cluster, MD, namespace, "small"), "CacheReady")
        assert small["message"] == "the weights are in the cache"
    finally:
        running.stop()


def test_a_deleted_claim_under_a_ready_deployment_is_downloaded_again(
        cluster: Cluster, namespace: str, slow: OperatorProcess) -> None:
    apply(cluster, namespace, lite("lost"))
    claim = _claim_of(cluster, namespace, "lost")
    _finish(cluster, namespace, f"{claim}-dl")
    wait_available(cluster, namespace, "lost")
    claim_uid = (get(cluster, "pvc", namespace, claim) or {})["metadata"]["uid"]
    deployment_uid = (get(cluster, "deployment", namespace, "lost") or {})["metadata"]["uid"]

    cluster.kubectl("delete", "pvc", claim, "-n", namespace, "--wait=false")
    wait_for("CacheReady false", lambda: _reason(
        cluster, namespace, "lost", "CacheReady") != "CacheComplete", timeout=10)
    warned = wait_for("a CacheDeleted event", lambda: _events(
        cluster, namespace, "lost", "CacheDeleted"))
    assert warned[0]["type"] == "Warning"
    assert warned[0]["message"].startswith(f"cache claim {claim} is being deleted")
    # the engine waits for the new download: no Deployment meanwhile, a new claim, a new Job
    wait_for("a new claim", lambda: (get(cluster, "pvc", namespace, claim) or {}).get(
        "metadata", {}).get("uid") not in (None, claim_uid))
    wait_for("the new download", lambda: _job_pod(cluster, namespace, f"{claim}-dl"))
    wait_for("Downloading", lambda: _reason(cluster, namespace, "lost", "CacheReady")
             == "Downloading")
    status = _status(cluster, namespace, "lost")
    assert status["phase"] == "Downloading"
    assert condition({"status": status}, "Available")["reason"] == "WaitingForCache"
    assert get(cluster, "deployment", namespace, "lost") is None

    _finish(cluster, namespace, f"{claim}-dl")
    wait_available(cluster, namespace, "lost")
    deployment = get(cluster, "deployment", namespace, "lost") or {}
    assert deployment["metadata"]["uid"] != deployment_uid
    assert _reason(cluster, namespace, "lost", "CacheReady") == "CacheComplete"
    assert [e["message"] for e in _events(cluster, namespace, "lost", "Phase")
            if e["message"].startswith("Ready ->")] == ["Ready -> Pending"]


def test_a_running_job_made_under_another_config_is_replaced(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    first = OperatorProcess(cluster, namespace, tmp_path, config=SLOW).start()
    try:
        apply(cluster, namespace, lite("config"))
        claim = _claim_of(cluster, namespace, "config")
        job_name = f"{claim}-dl"
        wait_for("the download", lambda: _job_pod(cluster, namespace, job_name))
        job = get(cluster, "job", namespace, job_name) or {}
        time.sleep(3)  # the same config never replaces its own Job
        assert (get(cluster, "job", namespace, job_name) or {})["metadata"]["uid"] == \
            job["metadata"]["uid"]
    finally:
        first.stop()
    image = "ghcr.io/modeldeploy/loader:0.2.0"
    second = OperatorProcess(cluster, namespace, tmp_path,
                             config={**SLOW, "loaderImage": image}).start()
    try:
        replaced = wait_for("a new Job with the new loader image", lambda: (
            lambda j: j if j and j["metadata"]["uid"] != job["metadata"]["uid"] and
            j["spec"]["template"]["spec"]["containers"][0]["image"] == image else None)(
                get(cluster, "job", namespace, job_name)))
        wait_for("its pod", lambda: _job_pod(cluster, namespace, job_name))
        assert _reason(cluster, namespace, "config", "CacheReady") == "Downloading"
        time.sleep(3)
        assert (get(cluster, "job", namespace, job_name) or {})["metadata"]["uid"] == \
            replaced["metadata"]["uid"]  # replaced once
        _finish(cluster, namespace, job_name)
        wait_available(cluster, namespace, "config")
    finally:
        second.stop()


def test_a_failed_job_made_under_another_config_is_left_alone(
        cluster: Cluster, namespace: str, tmp_path: Path, crd: None) -> None:
    failing = {"downloadBackoffLimit": 0,
               "downloadPodAnnotations": {"e2e.modeldeploy.dev/outcome": "fail"}}
    first = OperatorProcess(cluster, namespace, tmp_path, config=failing).start()
    try:
        apply(cluster, namespace, lite("failed"))
        claim = _claim_of(cluster, namespace, "failed")
        wait_for("DownloadFailed", lambda: _reason(
            cluster, namespace, "failed", "CacheReady") == "DownloadFailed")
        job = get(cluster, "job", namespace, f"{claim}-dl") or {}
    finally:
        first.stop()
    second = OperatorProcess(cluster, namespace, tmp_path, config={
        **failing, "loaderImage": "ghcr.io/modeldeploy/loader:0.2.0"}).start()
    try:
        time.sleep(5)  # the new operator's first reconciles are done
        kept = get(cluster, "job", namespace, f"{claim}-dl") or {}
        assert kept["metadata"]["uid"] == job["metadata"]["uid"]
        assert kept["metadata"]["resourceVersion"] == job["metadata"]["resourceVersion"]
        assert _reason(cluster, namespace, "failed", "CacheReady") == "DownloadFailed"
        assert _status(cluster, namespace, "failed")["phase"] == "Failed"
    finally:
        second.stop()
