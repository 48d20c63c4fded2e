"""The Service in front of a ModelDeployment's engine pods. Pure."""

from __future__ import annotations

from typing import Any

from ..labels import common_labels, serving_labels
from ..objects import metadata
from ..plan import Plan
from .lws import leader_selector

Obj = dict[str, Any]


def service(plan: Plan, owner: Obj | None) -> Obj:
    selector = serving_labels(plan.name)
    # a group of pods across nodes serves from its leader
    pods = leader_selector(plan.name) if plan.multi_node else selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(plan.name, plan.namespace,
                             {**common_labels("endpoint"), **selector},
                             [owner] if owner else []),
        "spec": {
            "type": "ClusterIP",
            "selector": pods,
            "ports": [{"name": "http", "port": plan.spec.port, "targetPort": "http",
                       "protocol": "TCP", "appProtocol": "http"}],
        },
    }
