"""The cache claim and the download Job that fills it, as plain dicts. Pure."""

from __future__ import annotations

import shlex
from typing import Any

from ..api import Hub
from ..labels import (
    CACHE_LABEL,
    HUB_ANNOTATION,
    MODEL_ID_ANNOTATION,
    RETAIN_ANNOTATION,
    REVISION_ANNOTATION,
    common_labels,
)
from ..objects import metadata, pod_metadata, pod_security, restricted_container
from ..plan import WEIGHTS_DIR, Plan
from .naming import MARKER_FILE, download_job_name, weights_coordinates

Obj = dict[str, Any]

# Checkpoint copies the engines never read (Meta's original/, Mistral's consolidated
# files): downloading them would double the size the cache is planned for.
DOWNLOAD_EXCLUDES = ("original/*", "consolidated*", "*.gguf")
LOADER_UID = 1000


def coordinates(plan: Plan) -> str:
    return weights_coordinates(plan.hub, plan.model_id, plan.revision)


def cache_claim(plan: Plan, owners: list[Obj]) -> Obj:
    annotations = {MODEL_ID_ANNOTATION: plan.model_id, REVISION_ANNOTATION: plan.revision,
                   HUB_ANNOTATION: plan.hub.value}
    if plan.cache.retain:
        annotations[RETAIN_ANNOTATION] = "true"
    spec: Obj = {
        "accessModes": [plan.cache.access_mode],
        "resources": {"requests": {"storage": plan.cache.size}},
        "volumeMode": "Filesystem",
    }
    if plan.cache.storage_class:
        spec["storageClassName"] = plan.cache.storage_class
    labels = {**common_labels("weights-cache"), CACHE_LABEL: plan.cache.claim_name}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        # A retained cache must outlive its users, so it gets no owners at all.
        "metadata": metadata(plan.cache.claim_name, plan.namespace, labels,
                             [] if plan.cache.retain else owners, annotations),
        "spec": spec,
    }


def download_script(plan: Plan) -> str:
    """Download into the cache; the marker is written last, so a partial copy never serves."""
    target = f"/cache/{WEIGHTS_DIR}"
    excludes = " ".join(f"--exclude {shlex.quote(p)}" for p in DOWNLOAD_EXCLUDES)
    if plan.hub is Hub.HUGGINGFACE:
        fetch = (f"hf download {shlex.quote(plan.model_id)} --revision "
                 f"{shlex.quote(plan.revision)} --local-dir {target} {excludes}")
    else:
        fetch = (f"modelscope download --model {shlex.quote(plan.model_id)} --revision "
                 f"{shlex.quote(plan.revision)} --local_dir {target} {excludes}")
    want = shlex.quote(coordinates(plan))
    marker = f"/cache/{MARKER_FILE}"
    return "\n".join([
        "set -eu",
        f'if [ -f {marker} ] && [ "$(cat {marker})" = {want} ]; then',
        '  echo "weights already complete in the cache"; exit 0',
        "fi",
        f"rm -f {marker}",
        fetch,
        f"printf '%s' {want} > {marker}.tmp && mv {marker}.tmp {marker}",
        'echo "download complete"',
    ])


def _token_env(plan: Plan) -> list[Obj]:
    ref = plan.spec.hubTokenSecretRef
    if ref is None:
        return []
    name = "HF_TOKEN" if plan.hub is Hub.HUGGINGFACE else "MODELSCOPE_API_TOKEN"
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def download_job(plan: Plan, owners: list[Obj]) -> Obj:
    labels = {**common_labels("download"), CACHE_LABEL: plan.cache.claim_name}
    env = [
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "MODELSCOPE_CACHE", "value": "/tmp/modelscope"},
        *_token_env(plan),
    ]
    container = {
        "name": "download",
        "image": plan.cache.loader_image,
        "command": ["/bin/sh", "-c", download_script(plan)],
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container(read_only_root=True),
    }
    pod_spec = {
        "restartPolicy": "Never",
        "securityContext": pod_security(LOADER_UID),
        "containers": [container],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": plan.cache.claim_name}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(download_job_name(plan.cache.claim_name), plan.namespace, labels,
                             owners, {MODEL_ID_ANNOTATION: plan.model_id,
                                      REVISION_ANNOTATION: plan.revision}),
        "spec": {
            "backoffLimit": plan.cache.backoff_limit,
            "template": {"metadata": pod_metadata(labels, dict(plan.cache.pod_annotations)),
                         "spec": pod_spec},
        },
    }
