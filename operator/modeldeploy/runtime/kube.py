"""A thin async Kubernetes client: plain dicts in and out, server-side apply, counted calls."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient, Client, codecs
from lightkube.core.resource import NamespacedResourceG
from lightkube.generic_resource import Generic, create_api_info, create_namespaced_resource
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import (
    Event,
    PersistentVolumeClaim,
    Pod,
    Service,
    ServiceAccount,
)
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import CascadeType, PatchType

from .. import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .metrics import API_CALLS

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
    "ServiceAccount": ServiceAccount,
    "Role": Role,
    "RoleBinding": RoleBinding,
}

# the status error of lightkube's HTTP library (ApiError's base class): what a path the API does
# not serve raises, with no Status body to make an ApiError of
HTTPStatusError: type[Exception] = ApiError.__bases__[0]

LeaderWorkerSet = create_namespaced_resource("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet",
                                            "leaderworkersets")
KINDS["LeaderWorkerSet"] = LeaderWorkerSet


class _PartialDeployment(NamespacedResourceG, Generic):  # type: ignore[misc]
    """A Deployment as a plain dict, for an apply of a few of its fields."""

    _api_info = create_api_info("apps", "v1", "Deployment", "deployments")


_PARTIAL: dict[str, Any] = {"Deployment": _PartialDeployment}


def _raw(group: str, version: str, kind: str, plural: str) -> Any:
    """A kind as plain dicts, sent and read back as they are (no model round trip: an update
    carries the managedFields it was given)."""
    return type(f"_Raw{kind}", (NamespacedResourceG, Generic),
                {"_api_info": create_api_info(group, version, kind, plural)})


# the kinds the operator creates, reads back (a refused create, a name check) and updates
_RAW: dict[str, Any] = {
    "PersistentVolumeClaim": _raw("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    "Job": _raw("batch", "v1", "Job", "jobs"),
    "Deployment": _raw("apps", "v1", "Deployment", "deployments"),
    "Service": _raw("", "v1", "Service", "services"),
    "ServiceAccount": _raw("", "v1", "ServiceAccount", "serviceaccounts"),
    "Role": _raw("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    "RoleBinding": _raw("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    "LeaderWorkerSet": _raw("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet",
                            "leaderworkersets"),
}


class Kube:
    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER)

    def _count(self, verb: str, kind: str) -> None:
        API_CALLS.labels(verb, kind).inc()

    async def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]:
        self._count("list", kind)
        selectors: dict[str, Any] = dict(labels or {})
        field_selectors: dict[str, Any] = dict(fields or {})
        found = self.client.list(KINDS[kind], namespace=namespace, labels=selectors,
                                 fields=field_selectors)
        return [_as_dict(o) async for o in found]

    async def served(self, kind: str, namespace: str) -> bool:
        """Whether the API serves KIND (False when its CRD is not installed: 404)."""
        self._count("list", kind)
        try:
            async for _ in self.client.list(KINDS[kind], namespace=namespace, chunk_size=1):
                break
        except HTTPStatusError as err:  # lightkube's ApiError is one too
            if getattr(getattr(err, "response", None), "status_code", None) == 404:
                return False
            raise
        return True

    async def apply(self, obj: Obj, field_manager: str | None = None,
                    partial: bool = False) -> Obj:
        self._count("apply", obj["kind"])
        # a partial apply names a few fields: the typed models insist on whole objects
        resource: Any = _PARTIAL[obj["kind"]].from_dict(obj) if partial else codecs.from_dict(obj)
        applied = await self.client.apply(resource, field_manager=field_manager or FIELD_MANAGER,
                                          force=True)
        return _as_dict(applied)

    async def create(self, obj: Obj) -> Obj:
        """POST: fails with 409 AlreadyExists when the name is taken (by anything)."""
        self._count("create", obj["kind"])
        created = await self.client.create(_RAW[obj["kind"]].from_dict(obj),
                                           field_manager=FIELD_MANAGER)
        return _as_dict(created)

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object as the API server holds it (None: there is none)."""
        self._count("get", kind)
        try:
            found = await self.client.get(_RAW[kind], name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return _as_dict(found)

    async def replace(self, obj: Obj) -> Obj:
        """PUT of a whole object (its resourceVersion: 409 Conflict if it changed since)."""
        self._count("update", obj["kind"])
        replaced = await self.client.replace(_RAW[obj["kind"]].from_dict(obj),
                                             field_manager=FIELD_MANAGER)
        return _as_dict(replaced)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self._count("delete", kind)
        try:
            await self.client.delete(KINDS[kind], name, namespace=namespace,
                                     cascade=CascadeType.BACKGROUND)
        except ApiError as err:
            if err.status.code != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj:
        self._count("patch", "ModelDeployment/status")
        patched = await self.client.patch(ModelDeploymentResource.Status, name,
                                          {"status": status}, namespace=namespace,
                                          patch_type=PatchType.MERGE)
        return _as_dict(patched)


    async def post_event(self, body: Obj, type: str, reason: str, message: str) -> None:
        """A core/v1 Event about a ModelDeployment (what `kubectl describe` shows)."""
        self._count("create", "Event")
        meta = body["metadata"]
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.client.create(codecs.from_dict({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": type, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER, "reportingInstance": socket.gethostname(),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }))


LWS_VERBS = ("get", "list", "watch", "create", "patch", "delete")


def may_manage_leader_worker_sets(namespaces: list[str]) -> bool:
    """Whether RBAC lets this identity manage LeaderWorkerSets in every watched namespace (all
    of them when none is named). Asked once at start (SelfSubjectAccessReview), whether or
    not the CRD is installed."""
    client = Client(field_manager=FIELD_MANAGER)
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        for verb in LWS_VERBS:
            review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=ResourceAttributes(
                    group="leaderworkerset.x-k8s.io", resource="leaderworkersets", verb=verb,
                    namespace=namespace)))
            answer = client.create(review)
            if answer.status is None or not answer.status.allowed:
                return False
    return True


def _as_dict(obj: Any) -> Obj:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())
