"""Download progress end to end on the real control plane: a test plays the download pod with
that pod's own ServiceAccount (the identity the operator made for the Job) and reports progress
the way the loader does; the ModelDeployments of those weights show it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import yaml

from harness import Cluster
from helpers import MD, apply, get, items, lite, wait_for
from modeldeploy.loader.kube import JobTarget, PatchRefused, patch_job_annotation
from modeldeploy.loader.progress import Progress, encode_progress
from operator_process import OperatorProcess

GIB = 2**30


def _target(cluster: Cluster, namespace: str, job: str, workdir: Path) -> JobTarget:
    token = cluster.kubectl("create", "token", job, "-n", namespace,
                            "--duration=1h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = workdir / "ca.crt"
    ca.write_bytes(base64.b64decode(
        config["clusters"][0]["cluster"]["certificate-authority-data"]))
    return JobTarget(server=cluster.server, token=token, namespace=namespace, job_name=job,
                     ca_file=str(ca))


def _report(target: JobTarget, done_gib: int, total_gib: int) -> None:
    patch_job_annotation(target, encode_progress(Progress(
        state="downloading", bytes_done=done_gib * GIB, bytes_total=total_gib * GIB,
        files_done=done_gib // 10, files_total=total_gib // 10,
        updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        bytes_per_second=210e6, eta_seconds=23 * 60)))


def test_progress_reaches_status_and_kubectl_get(cluster: Cluster, namespace: str,
                                                 tmp_path: Path, crd: None) -> None:
    # the download pod runs (kwok keeps it Running) until the test is done with it
    slow = {"downloadPodAnnotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "600s",
                                       "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "600s"}}
    running = OperatorProcess(cluster, namespace, tmp_path, config=slow).start()
    try:
        apply(cluster, namespace, lite("first"))
        apply(cluster, namespace, lite("second", quantization="8-bit"))  # the same weights
        claim = wait_for("the cache claim in status", lambda: (
            (get(cluster, MD, namespace, "first") or {}).get("status", {})
            .get("resolved", {}).get("cacheClaim")))
        job = f"{claim}-dl"
        wait_for("the download Job", lambda: get(cluster, "job", namespace, job))
        target = _target(cluster, namespace, job, tmp_path)

        for name in ("first", "second"):  # settled before counting: claim bound, Job running
            wait_for(f"{name} downloading", lambda name=name: (
                (get(cluster, MD, namespace, name) or {}).get("status", {}).get("phase")
                == "Downloading"))
        time.sleep(2)
        writes = running.writes()
        reads = running.reads()
        for done in (100, 163):
            _report(target, done, 440)
            for name in ("first", "second"):
                wait_for(f"{done} GiB in {name}'s status", lambda name=name, done=done: (
                    (lambda status: status.get("phase") == "Downloading" and
                     status.get("download", {}).get("bytesDone") == done * GIB)(
                        (get(cluster, MD, namespace, name) or {}).get("status", {}))))
        md = get(cluster, MD, namespace, "first")
        assert md is not None and md["status"]["phase"] == "Downloading"
        assert md["status"]["download"]["percent"] == 37
        cache = next(c for c in md["status"]["conditions"] if c["type"] == "CacheReady")
        assert cache["message"] == "Downloading 37% (163 of 440 GiB, 210 MB/s, about 23 min left)"
        table = cluster.kubectl("get", "md", "-n", namespace).stdout.splitlines()
        assert "DOWNLOAD" in table[0]
        assert all(" 37 " in line for line in table[1:]), table
        # two updates, two users: one status write each per update, no read
        time.sleep(2)
        assert running.writes() - writes == 4
        assert running.reads() == reads

        # the same identity may patch nothing else
        other = JobTarget(target.server, target.token, namespace, "someone-elses-job",
                          target.ca_file)
        try:
            patch_job_annotation(other, "{}")
        except PatchRefused as refused:
            assert refused.status == 403
        else:
            raise AssertionError("the download's identity patched another Job")
        assert {i["metadata"]["name"] for i in items(cluster, "roles", namespace)} == {job}
    finally:
        running.stop()
