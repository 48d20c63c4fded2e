"""A thin async Kubernetes client: plain dicts in and out, server-side apply, counted calls."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, PersistentVolumeClaim, Pod, Service
from lightkube.types import CascadeType, PatchType
from prometheus_client import Counter

from . import GROUP, KIND, PLURAL, VERSION

FIELD_MANAGER = "modeldeploy"
Obj = dict[str, Any]

ModelDeploymentResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
KINDS: dict[str, Any] = {
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Job": Job,
    "Deployment": Deployment,
    "Service": Service,
    "Pod": Pod,
    "Event": Event,
}

API_CALLS = Counter("modeldeploy_api_requests_total",
                    "Kubernetes API requests made by reconciles", ["verb", "kind"])


class Kube:
    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER)

    def _count(self, verb: str, kind: str) -> None:
        API_CALLS.labels(verb, kind).inc()

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        self._count("get", kind)
        try:
            obj = await self.client.get(KINDS[kind], name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return _as_dict(obj)

    async def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]:
        self._count("list", kind)
        selectors: dict[str, Any] = dict(labels or {})
        field_selectors: dict[str, Any] = dict(fields or {})
        found = self.client.list(KINDS[kind], namespace=namespace, labels=selectors,
                                 fields=field_selectors)
        return [_as_dict(o) async for o in found]

    async def apply(self, obj: Obj, field_manager: str = FIELD_MANAGER) -> Obj:
        self._count("apply", obj["kind"])
        # a dict subclass is a lightkube generic object already (a partial apply)
        resource: Any = codecs.from_dict(obj) if type(obj) is dict else obj
        applied = await self.client.apply(resource, field_manager=field_manager, force=True)
        return _as_dict(applied)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self._count("delete", kind)
        try:
            await self.client.delete(KINDS[kind], name, namespace=namespace,
                                     cascade=CascadeType.BACKGROUND)
        except ApiError as err:
            if err.status.code != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self._count("patch", "ModelDeployment/status")
        await self.client.patch(ModelDeploymentResource.Status, name, {"status": status},
                                namespace=namespace, patch_type=PatchType.MERGE)


def _as_dict(obj: Any) -> Obj:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())
