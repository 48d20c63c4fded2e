"""The gateway's view of the API: list-then-watch of ModelDeployments and EndpointSlices into
the registry (no API call per request), and the Deployments' scale subresource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from .. import GROUP, KIND, PLURAL, VERSION
from . import AUTOSCALER_FIELD_MANAGER
from .registry import SERVICE_NAME_LABEL, Registry

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ALL_NAMESPACES = "*"

# the same generic resource the operator defines (lightkube keeps one per kind)
ModelDeploymentResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


def _as_dict(obj: Any) -> Obj:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())


class Reflector:
    """Keeps one kind's objects of the given namespaces in the registry."""

    def __init__(self, client: AsyncClient, resource: Any, namespaces: list[str],
                 replace: Callable[[list[Obj]], None], put: Callable[[Obj], None],
                 drop: Callable[[Obj], None], labels: dict[str, Any] | None = None) -> None:
        self.client, self.resource = client, resource
        self.namespaces = namespaces or [ALL_NAMESPACES]
        self._replace, self._put, self._drop = replace, put, drop
        self.labels = labels
        self.synced = asyncio.Event()
        self._lists: dict[str, list[Obj]] = {}

    async def run(self) -> None:
        await asyncio.gather(*(self._run(ns) for ns in self.namespaces))

    async def _run(self, namespace: str) -> None:
        backoff = 0.5
        while True:
            try:
                listing = self.client.list(self.resource, namespace=namespace,
                                           labels=self.labels)
                items = [_as_dict(o) async for o in listing]
                self._lists[namespace] = items
                self._replace([o for found in self._lists.values() for o in found])
                if len(self._lists) == len(self.namespaces):
                    self.synced.set()
                backoff = 0.5
                async for kind, obj in self.client.watch(
                        self.resource, namespace=namespace, labels=self.labels,
                        resource_version=listing.resourceVersion):
                    data = _as_dict(obj)
                    if kind == "DELETED":
                        self._drop(data)
                    elif kind in ("ADDED", "MODIFIED"):
                        self._put(data)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # relist: a 410 Gone, a dropped connection, a restart
                log.warning("watch of %s in %s ended (%s); listing again in %.1fs",
                            self.resource.__name__, namespace, err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def reflectors(client: AsyncClient, namespaces: list[str],
               registry: Registry) -> list[Reflector]:
    return [
        Reflector(client, ModelDeploymentResource, namespaces, registry.replace_models,
                  registry.put_model, registry.drop_model),
        Reflector(client, EndpointSlice, namespaces, registry.replace_slices,
                  registry.put_slice, registry.drop_slice,
                  labels={SERVICE_NAME_LABEL: None}),
    ]


class KubeScale:
    """Reads and sets a Deployment's replicas through its scale subresource."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get_replicas(self, namespace: str, name: str) -> int | None:
        try:
            scale = await self.client.get(Deployment.Scale, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None  # not created yet (the weights are still downloading)
            raise
        return int((scale.spec.replicas if scale.spec else 0) or 0)

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        await self.client.patch(Deployment.Scale, name, {"spec": {"replicas": replicas}},
                                namespace=namespace, patch_type=PatchType.MERGE,
                                field_manager=AUTOSCALER_FIELD_MANAGER)
