"""The cache claim and the download Job that fills it, as plain dicts. Pure."""

from __future__ import annotations

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
from ..loader import (
    download_container_settings,
    download_failure_policy,
    download_pod_settings,
    download_rbac,
    loader_command,
)
from ..objects import metadata, pod_metadata, pod_security, restricted_container
from ..plan import Plan
from .naming import download_job_name, weights_coordinates

Obj = dict[str, Any]

LOADER_UID = 1000
CACHE_MOUNT = "/cache"  # where the download pod mounts the claim


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


# The download's env entries that come from a user's spec (hubTokenSecretRef), not from the
# operator: the users of a shared cache may name different Secrets.
TOKEN_ENV = ("HF_TOKEN", "MODELSCOPE_API_TOKEN")


def _token_env(plan: Plan) -> list[Obj]:
    ref = plan.spec.hubTokenSecretRef
    if ref is None:
        return []
    name = TOKEN_ENV[0] if plan.hub is Hub.HUGGINGFACE else TOKEN_ENV[1]
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _download_labels(plan: Plan) -> dict[str, str]:
    return {**common_labels("download"), CACHE_LABEL: plan.cache.claim_name}


def download_identity(plan: Plan, owners: list[Obj]) -> list[Obj]:
    """The download pod's ServiceAccount, and the Role and RoleBinding that let it patch its
    own Job (the progress annotation) and nothing else."""
    return download_rbac(download_job_name(plan.cache.claim_name), plan.namespace,
                         labels=_download_labels(plan), owners=owners)


def download_job(plan: Plan, owners: list[Obj]) -> Obj:
    labels = _download_labels(plan)
    name = download_job_name(plan.cache.claim_name)
    env = [
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "MODELSCOPE_CACHE", "value": "/tmp/modelscope"},
        *_token_env(plan),
    ]
    container = {
        "name": "download",
        "image": plan.cache.loader_image,
        "command": loader_command(plan.hub.value, plan.model_id, plan.revision,
                                  target=CACHE_MOUNT, job_name=name),
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container(read_only_root=True),
        **download_container_settings(),
    }
    pod_spec = {
        "restartPolicy": "Never",
        **download_pod_settings(name),
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
        "metadata": metadata(name, plan.namespace, labels,
                             owners, {MODEL_ID_ANNOTATION: plan.model_id,
                                      REVISION_ANNOTATION: plan.revision}),
        "spec": {
            "backoffLimit": plan.cache.backoff_limit,
            "podFailurePolicy": download_failure_policy(),
            "template": {"metadata": pod_metadata(labels, dict(plan.cache.pod_annotations)),
                         "spec": pod_spec},
        },
    }
