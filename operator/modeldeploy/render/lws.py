"""The LeaderWorkerSet of a replica larger than one node: one group of pods per replica, one
pod per node, the leader (index 0) serving the API. From the plan alone. Pure.

The pods are the serving Deployment's pods (render/serving.py: the same container, GPU limits,
/dev/shm, cache volume and placement), with the engine's group flags: the leader's command is
rank 0, the workers' carries $(LWS_WORKER_INDEX), which the LeaderWorkerSet controller's pod
webhook sets. Probes are the leader's only (the workers serve no HTTP). A restart of any pod
recreates the whole group (the engines cannot rejoin a running group), and the workers start
once the leader is ready.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from ..engines import engine_module
from ..labels import DEPLOYMENT_LABEL, common_labels, serving_labels
from ..objects import metadata
from ..plan import Plan
from .serving import deployment

Obj = dict[str, Any]

API_VERSION = "leaderworkerset.x-k8s.io/v1"
KIND = "LeaderWorkerSet"
# labels the LeaderWorkerSet controller puts on the pods it creates
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# the release the tests run against
LWS_TESTED_VERSION = "v0.9.0"


def leader_selector(name: str) -> dict[str, str]:
    """The Service's selector of a multi-node ModelDeployment: the group leaders only."""
    return {**serving_labels(name), WORKER_INDEX_LABEL: "0"}


def _one_pod_per_node(plan: Plan) -> Obj:
    """No two pods of one group on the same node (pods of other groups may share it)."""
    return {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": serving_labels(plan.name)},
        "matchLabelKeys": [GROUP_KEY_LABEL],
        "topologyKey": "kubernetes.io/hostname",
    }]}


def leader_worker_set(plan: Plan, owner: Obj | None) -> Obj:
    served = deployment(plan, owner)
    leader: Obj = served["spec"]["template"]
    leader["spec"]["affinity"]["podAntiAffinity"] = _one_pod_per_node(plan)
    worker = copy.deepcopy(leader)
    (container,) = [c for c in worker["spec"]["containers"] if c["name"] == "engine"]
    module = engine_module(plan.engine)
    container["command"] = module.command(replace(plan.engine_input, worker=True))
    for probe in PROBES:
        container.pop(probe, None)
    selector = serving_labels(plan.name)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(plan.name, plan.namespace, {**common_labels("engine"), **selector},
                             [owner] if owner else []),
        "spec": {
            "replicas": plan.spec.replicas,
            "startupPolicy": "LeaderReady",
            # GPUs are scarce: replace one group at a time rather than surge past the quota
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration": {
                "maxUnavailable": 1, "maxSurge": 0}},
            "leaderWorkerTemplate": {
                "size": plan.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
        },
    }


def group_ready_replicas(lws: Obj | None) -> int:
    """Groups whose every pod is ready (the controller's status.readyReplicas)."""
    return int(((lws or {}).get("status") or {}).get("readyReplicas") or 0)


__all__ = ["API_VERSION", "DEPLOYMENT_LABEL", "KIND", "LWS_TESTED_VERSION",
           "WORKER_INDEX_LABEL", "group_ready_replicas", "leader_selector", "leader_worker_set"]
