"""Plan -> Kubernetes objects as plain dicts. No I/O.

The set: the weight-cache PVC, its download Job (left out once the cache is complete),
the engine Deployment and the Service. Owner references are the controller's business:
it passes them in, since a shared cache is owned by every ModelDeployment that uses it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from .api import Hub
from .config import OperatorConfig
from .engines import ENGINE_PORT, engine_module
from .engines.base import HOME_DIR, OPERATOR_ENV
from .labels import (
    CACHE_LABEL,
    HUB_ANNOTATION,
    MODEL_ID_ANNOTATION,
    RETAIN_ANNOTATION,
    REVISION_ANNOTATION,
    common_labels,
    download_job_name,
    serving_labels,
)
from .plan import Plan

Obj = dict[str, Any]

CACHE_MOUNT = "/models"
WEIGHTS_DIR = "weights"
MARKER_FILE = ".modeldeploy-complete"
# Checkpoint copies the engines never read (Meta's original/, Mistral's consolidated
# files): downloading them would double the size the cache is planned for.
DOWNLOAD_EXCLUDES = ("original/*", "consolidated*", "*.gguf")
LOADER_UID = 1000
ENGINE_UID = 1000

# Model load takes minutes (tens of GiB) to an hour (hundreds); this bounds the startup probe.
STARTUP_BASE_SECONDS = 600
STARTUP_SECONDS_PER_GIB = 8


@dataclass(frozen=True)
class Owners:
    """Owner references: the ModelDeployment itself, and every user of the shared cache."""

    controller: Obj | None = None
    cache: list[Obj] = field(default_factory=list)


def render(plan: Plan, config: OperatorConfig, *, cache_complete: bool = False,
           owners: Owners | None = None) -> list[Obj]:
    owners = owners or Owners()
    objects = [cache_claim(plan, owners.cache)]
    if not cache_complete:
        objects.append(download_job(plan, config, owners.cache))
    objects += [deployment(plan, config, owners.controller), service(plan, owners.controller)]
    return objects


def _meta(name: str, namespace: str, labels: dict[str, str], owners: list[Obj],
          annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    return meta


def weights_coordinates(plan: Plan) -> str:
    return f"{plan.hub.value}/{plan.model_id}@{plan.revision}"


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
        "metadata": _meta(plan.cache.claim_name, plan.namespace, labels,
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
    want = shlex.quote(weights_coordinates(plan))
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


def download_job(plan: Plan, config: OperatorConfig, owners: list[Obj]) -> Obj:
    labels = {**common_labels("download"), CACHE_LABEL: plan.cache.claim_name}
    env = [
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "MODELSCOPE_CACHE", "value": "/tmp/modelscope"},
        *_token_env(plan),
    ]
    container = {
        "name": "download",
        "image": config.loaderImage,
        "command": ["/bin/sh", "-c", download_script(plan)],
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _restricted_container(read_only_root=True),
    }
    pod_spec = {
        "restartPolicy": "Never",
        "securityContext": _pod_security(LOADER_UID),
        "containers": [container],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": plan.cache.claim_name}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(download_job_name(plan.cache.claim_name), plan.namespace, labels,
                          owners, {MODEL_ID_ANNOTATION: plan.model_id,
                                   REVISION_ANNOTATION: plan.revision}),
        "spec": {
            "backoffLimit": config.downloadBackoffLimit,
            "template": {"metadata": _pod_meta(labels, config.downloadPodAnnotations),
                         "spec": pod_spec},
        },
    }


def _pod_meta(labels: dict[str, str], annotations: dict[str, str]) -> Obj:
    meta: Obj = {"labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _pod_security(uid: int | None) -> Obj:
    security: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if uid is not None:
        security |= {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    return security


def _restricted_container(read_only_root: bool) -> Obj:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": read_only_root}


def _engine_env(plan: Plan) -> list[Obj]:
    module = engine_module(plan.engine)
    base = {**{name: value for name, (value, _) in OPERATOR_ENV.items()}, **module.env(plan)}
    user = {e.name for e in plan.spec.env}
    env: list[Obj] = [{"name": k, "value": v} for k, v in base.items() if k not in user]
    for var in plan.spec.env:
        env.append(var.model_dump(exclude_none=True, mode="json"))
    return env


def _resources(plan: Plan, config: OperatorConfig) -> Obj:
    gpu_name = plan.spec.gpu.resourceName or config.gpuResourceName
    requests: Obj = {"cpu": str(4 * plan.gpus), "memory": f"{16 * plan.gpus}Gi"}
    limits: Obj = {}
    user = plan.spec.resources
    if user is not None:
        requests |= (user.requests.model_dump(exclude_none=True) if user.requests else {})
        limits |= (user.limits.model_dump(exclude_none=True) if user.limits else {})
    requests[gpu_name] = str(plan.gpus)
    limits[gpu_name] = str(plan.gpus)
    return {"requests": requests, "limits": limits}


def _probes(plan: Plan) -> Obj:
    module = engine_module(plan.engine)
    check = {"httpGet": {"path": module.health_path, "port": "http"}}
    budget = STARTUP_BASE_SECONDS + STARTUP_SECONDS_PER_GIB * plan.need.weights_gib
    return {
        "startupProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 5,
                         "failureThreshold": int(budget // 10) + 1},
        "readinessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 5,
                           "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": 30, "timeoutSeconds": 10,
                          "failureThreshold": 5},
    }


def engine_container(plan: Plan, config: OperatorConfig) -> Obj:
    module = engine_module(plan.engine)
    model_path = f"{CACHE_MOUNT}/{WEIGHTS_DIR}"
    return {
        "name": "engine",
        "image": plan.image,
        "command": module.command(plan, model_path),
        "env": _engine_env(plan),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "resources": _resources(plan, config),
        "volumeMounts": [
            {"name": "weights", "mountPath": CACHE_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "home", "mountPath": HOME_DIR},
        ],
        **_probes(plan),
        "securityContext": _restricted_container(read_only_root=False),
    }


GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, set by GPU feature discovery


def min_gpu_memory_mib(plan: Plan) -> int:
    """The smallest GPU this replica fits on, given how its memory need is split."""
    return int(plan.need.required_gib / plan.gpus / plan.need.usable_fraction * 1024)


def gpu_memory_affinity(plan: Plan) -> Obj:
    """Nodes whose GPUs are too small are excluded; nodes that do not say are allowed."""
    threshold = str(min_gpu_memory_mib(plan) - 1)
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "Gt",
                                   "values": [threshold]}]},
            {"matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "DoesNotExist"}]},
        ]}}}


def deployment(plan: Plan, config: OperatorConfig, owner: Obj | None) -> Obj:
    module = engine_module(plan.engine)
    selector = serving_labels(plan.name)
    pod_labels = {**plan.spec.podLabels, **common_labels("engine"), **selector}
    tolerations = plan.spec.gpu.tolerations
    if tolerations is None:
        tolerations = config.gpuTolerations
    pod_spec: Obj = {
        "securityContext": _pod_security(ENGINE_UID if module.run_as_non_root else None),
        "containers": [engine_container(plan, config)],
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": plan.cache.claim_name,
                                                         "readOnly": True}},
            {"name": "dshm", "emptyDir": {"medium": "Memory",
                                          "sizeLimit": f"{config.shmSizeGiB}Gi"}},
            {"name": "home", "emptyDir": {}},
        ],
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
    }
    if plan.spec.gpu.nodeSelector:
        pod_spec["nodeSelector"] = dict(plan.spec.gpu.nodeSelector)
    pod_spec["affinity"] = gpu_memory_affinity(plan)
    if tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in tolerations]
    template_meta = _pod_meta(pod_labels, plan.spec.podAnnotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan.name, plan.namespace, {**common_labels("engine"), **selector},
                          [owner] if owner else []),
        "spec": {
            "replicas": plan.spec.replicas,
            "selector": {"matchLabels": selector},
            # GPUs are scarce: replace pods one at a time rather than surge past the quota.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "progressDeadlineSeconds": 7200,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def service(plan: Plan, owner: Obj | None) -> Obj:
    selector = serving_labels(plan.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan.name, plan.namespace, {**common_labels("endpoint"), **selector},
                          [owner] if owner else []),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": plan.spec.port, "targetPort": "http",
                       "protocol": "TCP", "appProtocol": "http"}],
        },
    }


def endpoint(plan: Plan, config: OperatorConfig) -> str:
    return (f"http://{plan.name}.{plan.namespace}.svc.{config.clusterDomain}:"
            f"{plan.spec.port}/v1")
