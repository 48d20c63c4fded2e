"""The routing table: ModelDeployments and EndpointSlices (as the watches see them) -> which
addresses serve which model. Pure: the watches feed it, requests read it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..api import AutoscalingSpec

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ENGINE_PORT_NAME = "http"


@dataclass(frozen=True)
class Model:
    """One ModelDeployment as the gateway serves it."""

    served_name: str
    namespace: str
    name: str
    phase: str
    created: int
    autoscaling: AutoscalingSpec | None
    replicas: int | None  # the spec's replicas (None when autoscaled)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def served_name(md: Obj) -> str:
    """status.resolved.servedModelName, else spec.servedModelName, else the name."""
    resolved = ((md.get("status") or {}).get("resolved") or {}).get("servedModelName")
    return str(resolved or (md.get("spec") or {}).get("servedModelName") or
               md["metadata"]["name"])


def model_of(md: Obj) -> Model:
    meta, spec = md["metadata"], md.get("spec") or {}
    scaling: AutoscalingSpec | None = None
    if spec.get("autoscaling") is not None:
        try:
            scaling = AutoscalingSpec.model_validate(spec["autoscaling"])
        except ValidationError:
            scaling = None  # the CRD refuses it; an older object is served as not autoscaled
    return Model(served_name=served_name(md), namespace=meta["namespace"], name=meta["name"],
                 phase=str((md.get("status") or {}).get("phase") or "Pending"),
                 created=_epoch(meta.get("creationTimestamp")), autoscaling=scaling,
                 replicas=None if scaling else int(spec.get("replicas", 1)))


def _epoch(stamp: Any) -> int:
    from datetime import datetime

    if not stamp:
        return 0
    if isinstance(stamp, datetime):
        return int(stamp.timestamp())
    try:
        return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def ready_addresses(endpoint_slice: Obj) -> list[tuple[str, int]]:
    """(address, port) of the endpoints that are ready and not terminating."""
    ports = endpoint_slice.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == ENGINE_PORT_NAME), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return []
    found = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # an unset "ready" means ready (the API's convention for unknown)
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        for address in (endpoint.get("addresses") or [])[:1]:
            found.append((str(address), int(port)))
    return found


@dataclass
class Registry:
    """Models by served name and ready addresses by ModelDeployment; change events wake
    requests that wait for a replica."""

    address_map: dict[str, str] = field(default_factory=dict)
    _models: dict[tuple[str, str], Model] = field(default_factory=dict)
    _slices: dict[tuple[str, str], tuple[tuple[str, str], list[tuple[str, int]]]] = \
        field(default_factory=dict)
    _by_name: dict[str, Model] = field(default_factory=dict)
    _addresses: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _changed: asyncio.Event | None = None

    # -- fed by the watches ------------------------------------------------------------------
    def replace_models(self, mds: list[Obj]) -> None:
        self._models = {}
        for md in mds:
            model = model_of(md)
            self._models[model.key] = model
        self._rebuild()

    def put_model(self, md: Obj) -> None:
        model = model_of(md)
        self._models[model.key] = model
        self._rebuild()

    def drop_model(self, md: Obj) -> None:
        meta = md["metadata"]
        self._models.pop((meta["namespace"], meta["name"]), None)
        self._rebuild()

    def replace_slices(self, slices: list[Obj]) -> None:
        self._slices = {}
        for s in slices:
            self._put_slice(s)
        self._rebuild()

    def put_slice(self, endpoint_slice: Obj) -> None:
        self._put_slice(endpoint_slice)
        self._rebuild()

    def drop_slice(self, endpoint_slice: Obj) -> None:
        meta = endpoint_slice["metadata"]
        self._slices.pop((meta["namespace"], meta["name"]), None)
        self._rebuild()

    def _put_slice(self, endpoint_slice: Obj) -> None:
        meta = endpoint_slice["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        self._slices[(meta["namespace"], meta["name"])] = (
            (meta["namespace"], service), ready_addresses(endpoint_slice))

    def _rebuild(self) -> None:
        by_name: dict[str, Model] = {}
        # the oldest ModelDeployment wins a served name claimed twice
        for model in sorted(self._models.values(),
                            key=lambda m: (m.created, m.namespace, m.name)):
            by_name.setdefault(model.served_name, model)
        addresses: dict[tuple[str, str], list[str]] = {}
        for service, ready in self._slices.values():
            for address, port in ready:
                target = self._map(address, port)
                found = addresses.setdefault(service, [])
                if target not in found:
                    found.append(target)
        self._by_name, self._addresses = by_name, addresses
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _map(self, address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        exact = f"{host}:{port}"
        return self.address_map.get(exact) or self.address_map.get(f"*:{port}") or exact

    def set_static(self, routes: dict[str, list[str]]) -> None:
        """A fixed table (served name -> "host:port" list) instead of the watches."""
        self._models = {("", name): Model(served_name=name, namespace="", name=name,
                                          phase="Ready", created=0, autoscaling=None,
                                          replicas=len(addresses))
                        for name, addresses in routes.items()}
        self._slices = {}
        self._rebuild()
        self._addresses = {("", name): list(addresses) for name, addresses in routes.items()}

    # -- read by requests --------------------------------------------------------------------
    def model(self, name: str) -> Model | None:
        return self._by_name.get(name)

    def models(self) -> list[Model]:
        return sorted(self._by_name.values(), key=lambda m: m.served_name)

    def addresses(self, model: Model) -> list[str]:
        """Ready "host:port" of the model's replicas."""
        return self._addresses.get(model.key, [])

    def changed(self) -> asyncio.Event:
        """An event set at the next change of the table."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed


@dataclass
class Peers:
    """The ready replicas of the gateway's own Service (from its EndpointSlices): each one sees
    about 1/N of the requests, so the autoscaler scales this process's in-flight count by N."""

    _slices: dict[tuple[str, str], int] = field(default_factory=dict)

    def replace(self, slices: list[Obj]) -> None:
        self._slices = {}
        for s in slices:
            self.put(s)

    def put(self, endpoint_slice: Obj) -> None:
        meta = endpoint_slice["metadata"]
        self._slices[(meta["namespace"], meta["name"])] = len(ready_addresses(endpoint_slice))

    def drop(self, endpoint_slice: Obj) -> None:
        meta = endpoint_slice["metadata"]
        self._slices.pop((meta["namespace"], meta["name"]), None)

    def count(self) -> int:
        """At least 1 (this process, before its own endpoint is ready)."""
        return max(1, sum(self._slices.values()))
