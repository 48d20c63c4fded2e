"""Specs the schema lets in but the planner refuses: managed flags and env under any spelling
the engine reads, revisions that could be read as flags or paths, a cache that cannot hold the
weights. Each gets phase Invalid with the exact reason and a sentence, a Warning event, and
nothing is created; and a failed download is retried by a spec change, with no Job deleted by
hand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import Cluster
from helpers import MD, apply, condition, get, items, lite, wait_available, wait_condition, wait_for
from operator_process import OperatorProcess

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("underscores", {"engineArgs": ["--tensor_parallel_size=8"]}, "InvalidEngineArgs",
     "(the engine reads it as --tensor-parallel-size)"),
    ("abbreviated", {"engineArgs": ["--tensor-parallel", "4"]}, "InvalidEngineArgs",
     "the engine reads it as --tensor-parallel-size"),
    ("max-len-spelling", {"engineArgs": ["--max_model_len=99"]}, "InvalidEngineArgs",
     "the operator sets it from"),
    ("sglang-tp", {"engine": "sglang", "engineArgs": ["--tp", "2"]}, "InvalidEngineArgs",
     "the engine reads it as --tp-size"),
    ("sglang-tp-underscore", {"engine": "sglang", "engineArgs": ["--tp_size", "2"]},
     "InvalidEngineArgs", "is not a sglang flag"),
    ("env-offline", {"env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}, "InvalidEngineArgs",
     "env may not set HF_HUB_OFFLINE"),
    ("env-home", {"env": [{"name": "HOME", "value": "/"}]}, "InvalidEngineArgs",
     "env may not set HOME"),
    ("revision-flag", {"revision": "--help"}, "InvalidRevision", "--help"),
    ("revision-dash", {"revision": "-x"}, "InvalidRevision", "-x"),
    ("revision-dots", {"revision": "main/../../etc"}, "InvalidRevision", ".."),
    ("cache-too-small", {"cache": {"size": "1Mi"}}, "InvalidCacheSize",
     "is smaller than the weights"),
    ("cache-absurd", {"cache": {"size": "9000Ei"}}, "InvalidCacheSize",
     "times the weights"),
]


def test_refused_by_the_planner_with_nothing_created(cluster: Cluster, namespace: str,
                                                     operator: OperatorProcess) -> None:
    for name, spec, _, _ in CASES:
        apply(cluster, namespace, lite(name, **spec))
    wrong = []
    for name, _, reason, said in CASES:
        resolved = wait_condition(cluster, namespace, name, "Resolved", reason)
        md = get(cluster, MD, namespace, name)
        assert md is not None
        if resolved["status"] != "False" or said not in resolved["message"] or \
                md["status"]["phase"] != "Invalid" or \
                condition(md, "Available").get("reason") != "InvalidSpec":
            wrong.append(f"{name}: {md['status']}")
    assert not wrong, "\n".join(wrong)
    time.sleep(2)  # what a wrong reconcile would make by now
    for kind in ("pvc", "jobs", "deployments", "services", "serviceaccounts,roles"):
        made = [o["metadata"]["name"] for o in items(cluster, kind, namespace)
                if o["metadata"]["name"] != "default"]
        assert made == [], (kind, made)
    warned = {e["involvedObject"]["name"] for e in items(
        cluster, "events", namespace, "--field-selector=type=Warning")}
    assert warned >= {name for name, *_ in CASES}


def test_a_failed_download_is_retried_by_a_spec_change(cluster: Cluster, namespace: str,
                                                       crd: None, tmp_path: Path) -> None:
    (tmp_path / "failing").mkdir()
    failing = OperatorProcess(cluster, namespace, tmp_path / "failing", config={
        "downloadBackoffLimit": 0,
        "downloadPodAnnotations": {"e2e.modeldeploy.dev/outcome": "fail"}}).start()
    try:
        apply(cluster, namespace, lite("retry"))
        failed = wait_condition(cluster, namespace, "retry", "CacheReady", "DownloadFailed")
        assert "to retry, change the spec" in failed["message"]
    finally:
        failing.stop()
    (tmp_path / "fixed").mkdir()
    fixed = OperatorProcess(cluster, namespace, tmp_path / "fixed").start()
    try:
        time.sleep(3)
        md = get(cluster, MD, namespace, "retry")
        assert md is not None and md["status"]["phase"] == "Failed"  # no retry by itself
        first = wait_for("the failed Job", lambda: items(cluster, "jobs", namespace))[0]
        apply(cluster, namespace, lite("retry", podLabels={"attempt": "2"}))
        wait_available(cluster, namespace, "retry", timeout=120)
        created = items(cluster, "events", namespace,
                        "--field-selector=involvedObject.kind=Job,reason=SuccessfulCreate")
        uids = {e["involvedObject"]["uid"] for e in created}
        assert first["metadata"]["uid"] in uids and len(uids) == 2
    finally:
        fixed.stop()


def test_a_failed_download_is_retried_by_the_retry_annotation(
        cluster: Cluster, namespace: str, crd: None, tmp_path: Path) -> None:
    failing = OperatorProcess(cluster, namespace, tmp_path, config={
        "downloadBackoffLimit": 0,
        "downloadPodAnnotations": {"e2e.modeldeploy.dev/outcome": "fail"}}).start()
    try:
        apply(cluster, namespace, lite("again"))
        wait_condition(cluster, namespace, "again", "CacheReady", "DownloadFailed")

        def job_uids() -> set[str]:
            created = items(cluster, "events", namespace, "--field-selector=involvedObject."
                            "kind=Job,reason=SuccessfulCreate")
            return {e["involvedObject"]["uid"] for e in created}

        first = job_uids()
        assert len(first) == 1
        # a time before the failure asks for nothing
        cluster.kubectl("annotate", "-n", namespace, f"{MD}/again", "--overwrite",
                        "modeldeploy.dev/retry-download=2000-01-01T00:00:00Z")
        time.sleep(3)
        assert job_uids() == first
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        cluster.kubectl("annotate", "-n", namespace, f"{MD}/again", "--overwrite",
                        f"modeldeploy.dev/retry-download={now}")
        wait_for("a second download Job", lambda: len(job_uids()) == 2 or None, timeout=60)
        # it fails too (the loader still fails here): the same annotation asks for no third
        wait_condition(cluster, namespace, "again", "CacheReady", "DownloadFailed")
        time.sleep(3)
        assert len(job_uids()) == 2
    finally:
        failing.stop()
