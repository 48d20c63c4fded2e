"""Who owns an autoscaled Deployment's ``spec.replicas`` under server-side apply.

The rule: the operator's field manager (``modeldeploy``) never keeps ``spec.replicas`` of an
autoscaled Deployment. Server-side apply deletes (resets to the default, 1) a field that its
only manager leaves out of an apply, so the field is first given a second owner:

1. At creation the Deployment is applied with ``replicas: minReplicas`` (0 stays 0; the API
   server's default would start one replica).
2. Whenever no manager but the operator owns ``spec.replicas`` (just created, or autoscaling
   was just turned on), the autoscaler's field manager applies the current value (clamped to
   min..max), so it co-owns it.
3. From then on the operator applies the Deployment without ``replicas``: its ownership lapses
   and the value stays with the autoscaler, the gateway (scale subresource, same manager) or
   whoever else scales it (an HPA, KEDA, ``kubectl scale``). Nothing is ever written to the
   ModelDeployment's spec.
"""

from __future__ import annotations

from typing import Any

from ..actions import Action, Apply
from ..api import ModelDeploymentSpec
from . import AUTOSCALER_FIELD_MANAGER

Obj = dict[str, Any]
OPERATOR_FIELD_MANAGER = "modeldeploy"


def replicas_owners(deployment: Obj) -> set[str]:
    """Field managers that own ``spec.replicas`` (the managedFields' ``f:spec.f:replicas``)."""
    owners = set()
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            owners.add(str(entry.get("manager", "")))
    return owners


def _replicas_apply(namespace: str, name: str, value: int) -> Apply:
    return Apply({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": name, "namespace": namespace},
                  "spec": {"replicas": value}},
                 field_manager=AUTOSCALER_FIELD_MANAGER, partial=True)


def handover(spec: ModelDeploymentSpec, live: Obj) -> Apply | None:
    """The apply that makes the autoscaler co-own the replicas, or None when someone other
    than the operator already owns them (or there is no autoscaling)."""
    scaling = spec.autoscaling
    if scaling is None or replicas_owners(live) - {OPERATOR_FIELD_MANAGER}:
        return None
    current = ((live.get("spec") or {}).get("replicas"))
    value = scaling.minReplicas if current is None else int(current)
    value = max(scaling.minReplicas, min(scaling.maxReplicas, value))
    meta = live["metadata"]
    return _replicas_apply(meta["namespace"], meta["name"], value)


def autoscaled_actions(spec: ModelDeploymentSpec, desired: Obj,
                       live: Obj | None) -> list[Action] | None:
    """The actions for an autoscaled Deployment that is new, or whose replicas the operator
    alone still owns: create it with minReplicas and hand the replicas over. None: the usual
    apply-if-differs (no autoscaling, or the hand-over is done)."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    meta = desired["metadata"]
    if live is None:
        created = {**desired, "spec": {**desired["spec"], "replicas": scaling.minReplicas}}
        return [Apply(created),
                _replicas_apply(meta["namespace"], meta["name"], scaling.minReplicas)]
    given = handover(spec, live)
    return None if given is None else [given]
