"""The serving Deployment: the engine's container, GPUs, probes, /dev/shm and placement, from
the plan alone. Pure."""

from __future__ import annotations

from typing import Any

from ..api.quantity import quantity_value
from ..api.spec import ResourceList
from ..engines import ENGINE_PORT, engine_module
from ..engines.base import HOME_DIR, OPERATOR_ENV
from ..labels import common_labels, serving_labels
from ..objects import metadata, pod_metadata, pod_security, restricted_container
from ..plan import CACHE_MOUNT, Plan

Obj = dict[str, Any]

ENGINE_UID = 1000

# Model load takes minutes (tens of GiB) to an hour (hundreds); this bounds the startup probe.
STARTUP_BASE_SECONDS = 600
STARTUP_SECONDS_PER_GIB = 8


def _engine_env(plan: Plan) -> list[Obj]:
    module = engine_module(plan.engine)
    base = {**{name: value for name, (value, _) in OPERATOR_ENV.items()},
            **module.env(plan.engine_input)}
    user = {e.name for e in plan.spec.env}
    env: list[Obj] = [{"name": k, "value": v} for k, v in base.items() if k not in user]
    for var in plan.spec.env:
        env.append(var.model_dump(exclude_none=True, mode="json"))
    return env


def _quantities(given: ResourceList | None) -> Obj:
    """Quantities as strings (a YAML ``cpu: 4`` arrives as a number)."""
    return {k: str(v) for k, v in (given.model_dump(exclude_none=True) if given else {}).items()}


def _within(default: str, limit: str | None) -> str:
    """A default request lowered to the user's limit (the API server refuses a request above
    its limit)."""
    low, high = quantity_value(default), quantity_value(limit) if limit else None
    return limit if limit is not None and low is not None and high is not None and \
        low > high else default


def _resources(plan: Plan) -> Obj:
    gpu_name = plan.placement.gpu_resource_name
    requests: Obj = {"cpu": str(4 * plan.gpus), "memory": f"{16 * plan.gpus}Gi"}
    limits: Obj = {}
    user = plan.spec.resources
    if user is not None:
        limits |= _quantities(user.limits)
        requests = {name: _within(value, limits.get(name)) for name, value in requests.items()}
        requests |= _quantities(user.requests)
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


def engine_container(plan: Plan) -> Obj:
    module = engine_module(plan.engine)
    return {
        "name": "engine",
        "image": plan.image,
        "command": module.command(plan.engine_input),
        "env": _engine_env(plan),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "resources": _resources(plan),
        "volumeMounts": [
            {"name": "weights", "mountPath": CACHE_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "home", "mountPath": HOME_DIR},
        ],
        **_probes(plan),
        "securityContext": restricted_container(read_only_root=False),
    }


GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, set by GPU feature discovery


def min_gpu_memory_mib(plan: Plan) -> int:
    """The smallest GPU this replica fits on, given how its memory need is split."""
    return int(plan.need.required_gib / plan.gpus_per_replica / plan.need.usable_fraction
               * 1024)


def gpu_memory_affinity(plan: Plan) -> Obj:
    """Nodes whose GPUs are too small are excluded; nodes that do not say are allowed."""
    threshold = str(min_gpu_memory_mib(plan) - 1)
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "Gt",
                                   "values": [threshold]}]},
            {"matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "DoesNotExist"}]},
        ]}}}


def deployment(plan: Plan, owner: Obj | None) -> Obj:
    module = engine_module(plan.engine)
    selector = serving_labels(plan.name)
    pod_labels = {**plan.spec.podLabels, **common_labels("engine"), **selector}
    placement = plan.placement
    pod_spec: Obj = {
        "securityContext": pod_security(ENGINE_UID if module.run_as_non_root else None),
        "containers": [engine_container(plan)],
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": plan.cache.claim_name,
                                                         "readOnly": True}},
            {"name": "dshm", "emptyDir": {"medium": "Memory",
                                          "sizeLimit": f"{placement.shm_size_gib}Gi"}},
            {"name": "home", "emptyDir": {}},
        ],
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    pod_spec["affinity"] = gpu_memory_affinity(plan)
    if placement.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in placement.tolerations]
    template_meta = pod_metadata(pod_labels, plan.spec.podAnnotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(plan.name, plan.namespace, {**common_labels("engine"), **selector},
                             [owner] if owner else []),
        "spec": {
            # With autoscaling the replicas belong to the scaler (gateway/handover.py says how
            # the field is handed over at creation): the operator's apply leaves them out.
            **({} if plan.spec.autoscaling else {"replicas": plan.spec.replicas}),
            "selector": {"matchLabels": selector},
            # GPUs are scarce: replace pods one at a time rather than surge past the quota.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "progressDeadlineSeconds": 7200,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
