"""The loader's progress channel on the real control plane: the RBAC the operator renders for
one download lets the download pod's ServiceAccount patch its own Job — and nothing else."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from modeldeploy.loader import (
    PROGRESS_ANNOTATION,
    Progress,
    download_container_settings,
    download_failure_policy,
    download_pod_settings,
    download_rbac,
    loader_command,
    parse_progress,
)
from modeldeploy.loader.kube import JobTarget, PatchRefused, merge_patch, patch_job_annotation
from modeldeploy.loader.progress import encode_progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "loader"))
from local_hub import LocalHub, tiny_model

JOB = "weights-abc-dl"
OTHER = "weights-other-dl"
Json = dict[str, Any]


def _job(name: str) -> Json:
    """A download Job as the operator renders it with the loader's pieces; suspended, so no pod
    is made: the test plays the download pod with its credentials."""
    container = {"name": "download", "image": "registry.example/loader:1",
                 "command": loader_command("huggingface", "org/tiny", "main", job_name=name),
                 **download_container_settings()}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"suspend": True, "backoffLimit": 3,
                     "podFailurePolicy": download_failure_policy(),
                     "template": {"spec": {"restartPolicy": "Never", "containers": [container],
                                           **download_pod_settings(name)}}}}


def _pod(name: str) -> Json:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "registry.example/idle:1"}]}}


def _apply(cluster: Cluster, namespace: str, *manifests: Json) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests))


def _annotation(cluster: Cluster, namespace: str, name: str) -> str | None:
    job = json.loads(cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
    value: str | None = (job["metadata"].get("annotations") or {}).get(PROGRESS_ANNOTATION)
    return value


@pytest.fixture
def channel(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[JobTarget]:
    """Two Jobs and a pod; the RBAC of the first Job's download; a token of its account."""
    # the account first: a Job naming a missing ServiceAccount is fine only while suspended
    _apply(cluster, namespace, *download_rbac(JOB, namespace), *download_rbac(OTHER, namespace))
    _apply(cluster, namespace, _job(JOB), _job(OTHER), _pod("bystander"))
    token = cluster.kubectl("create", "token", JOB, "-n", namespace,
                            "--duration=1h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"][
        "certificate-authority-data"]))
    yield JobTarget(server=cluster.server, token=token, namespace=namespace, job_name=JOB,
                    ca_file=str(ca))


def test_download_account_patches_its_own_job_only(cluster: Cluster, namespace: str,
                                                   channel: JobTarget) -> None:
    progress = Progress("downloading", 163 * 1024**3, 440 * 1024**3, 3, 55,
                        "2026-12-02T01:00:00Z", bytes_per_second=210e6, eta_seconds=1380)
    patch_job_annotation(channel, encode_progress(progress))
    assert parse_progress(_annotation(cluster, namespace, JOB)) == progress
    assert _annotation(cluster, namespace, OTHER) is None

    other = JobTarget(channel.server, channel.token, namespace, OTHER, channel.ca_file)
    with pytest.raises(PatchRefused) as refused:
        patch_job_annotation(other, encode_progress(progress))
    assert refused.value.status == 403
    assert _annotation(cluster, namespace, OTHER) is None

    with pytest.raises(PatchRefused) as refused:
        merge_patch(channel, f"/api/v1/namespaces/{namespace}/pods/bystander",
                    {"metadata": {"annotations": {PROGRESS_ANNOTATION: "{}"}}})
    assert refused.value.status == 403

    # the same token may not even read its Job, nor anything else
    account = cluster.service_account_kubeconfig(namespace, JOB, hours=1)

    def can_i(*what: str) -> str:
        result = cluster.kubectl("--kubeconfig", str(account), "auth", "can-i", *what,
                                 "-n", namespace, check=False)
        return result.stdout.strip()
    assert can_i("patch", f"jobs.batch/{JOB}") == "yes"
    for what in (("get", f"jobs.batch/{JOB}"), ("delete", f"jobs.batch/{JOB}"),
                 ("update", f"jobs.batch/{JOB}"), ("patch", f"jobs.batch/{OTHER}"),
                 ("list", "jobs.batch"), ("create", "jobs.batch"), ("patch", "pods"),
                 ("get", "secrets"), ("patch", "persistentvolumeclaims")):
        assert can_i(*what) == "no", what


def test_real_loader_publishes_progress_on_its_job(cluster: Cluster, namespace: str,
                                                   channel: JobTarget, tmp_path: Path) -> None:
    """The loader process itself, with the pod's mounted-token layout, downloading from a hub
    on 127.0.0.1: its Job's annotation moves while the transfer runs and ends complete."""
    accounts = tmp_path / "serviceaccount"
    accounts.mkdir()
    (accounts / "token").write_text(channel.token)
    (accounts / "namespace").write_text(namespace)
    assert channel.ca_file is not None
    (accounts / "ca.crt").write_bytes(Path(channel.ca_file).read_bytes())
    host, port = cluster.server.removeprefix("https://").rsplit(":", 1)

    hub = LocalHub({"org/tiny": tiny_model()}).start()
    hub.hold("model.safetensors", after=12 * 1024 * 1024)
    target = tmp_path / "cache"
    target.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"),
            "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    process = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy.loader", "--hub=huggingface",
         "--model-id=org/tiny", "--revision=main", f"--target={target}", f"--job-name={JOB}",
         f"--service-account-dir={accounts}", "--progress-interval=0.5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def downloading() -> Progress | None:
            p = parse_progress(_annotation(cluster, namespace, JOB))
            return p if p is not None and p.state == "downloading" and p.bytes_done else None
        seen = wait_until_value(downloading)
        assert 0 < seen.percent < 100 and seen.files_total == 4
        hub.release()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        hub.stop()
    assert process.returncode == 0, stderr
    assert "warning: progress not published" not in stderr
    final = parse_progress(_annotation(cluster, namespace, JOB))
    assert final is not None
    assert (final.state, final.percent, final.files_done) == ("complete", 100, 4)


def wait_until_value(probe: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s")

