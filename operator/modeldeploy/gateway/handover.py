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

from typing import Any, Protocol

from lightkube.core.resource import NamespacedResourceG
from lightkube.generic_resource import Generic, create_api_info

from ..api import ModelDeploymentSpec
from . import AUTOSCALER_FIELD_MANAGER

Obj = dict[str, Any]
OPERATOR_FIELD_MANAGER = "modeldeploy"


class PartialDeployment(NamespacedResourceG, Generic):  # type: ignore[misc]
    """A Deployment as a plain dict, for an apply of one field (the typed model insists on
    selector and template)."""

    _api_info = create_api_info("apps", "v1", "Deployment", "deployments")


class Applier(Protocol):
    async def apply(self, obj: Obj, field_manager: str = ...) -> Obj: ...


def replicas_owners(deployment: Obj) -> set[str]:
    """Field managers that own ``spec.replicas`` (the managedFields' ``f:spec.f:replicas``)."""
    owners = set()
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            owners.add(str(entry.get("manager", "")))
    return owners


def handover(spec: ModelDeploymentSpec, live: Obj) -> Obj | None:
    """The apply that makes the autoscaler co-own the replicas, or None when someone other
    than the operator already owns them (or there is no autoscaling)."""
    scaling = spec.autoscaling
    if scaling is None or replicas_owners(live) - {OPERATOR_FIELD_MANAGER}:
        return None
    current = ((live.get("spec") or {}).get("replicas"))
    value = scaling.minReplicas if current is None else int(current)
    value = max(scaling.minReplicas, min(scaling.maxReplicas, value))
    meta = live["metadata"]
    partial: Obj = PartialDeployment.from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": value}})
    return partial


async def apply_autoscaled(kube: Applier, spec: ModelDeploymentSpec, desired: Obj,
                           live: Obj | None) -> tuple[Obj | None, int]:
    """Creates an autoscaled Deployment with minReplicas and hands its replicas over; returns
    the live object afterwards and the writes made. A no-op without autoscaling."""
    scaling = spec.autoscaling
    if scaling is None:
        return live, 0
    writes = 0
    if live is None:
        created = {**desired, "spec": {**desired["spec"], "replicas": scaling.minReplicas}}
        live = await kube.apply(created)
        writes += 1
    given = handover(spec, live)
    if given is not None:
        live = await kube.apply(given, field_manager=AUTOSCALER_FIELD_MANAGER)
        writes += 1
    return live, writes
