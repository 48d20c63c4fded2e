"""Building blocks of every object the operator renders: metadata, owner references and the
restricted security settings its pods run with. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import API_VERSION, KIND

Obj = dict[str, Any]


@dataclass(frozen=True, order=True)
class Owner:
    """A ModelDeployment that owns a child: its name and uid."""

    name: str
    uid: str


def owner_reference(owner: Owner, controller: bool) -> Obj:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": controller, "blockOwnerDeletion": controller}


@dataclass(frozen=True)
class Owners:
    """Owner references: the ModelDeployment itself, and every user of the shared cache."""

    controller: Obj | None = None
    cache: list[Obj] = field(default_factory=list)

    @classmethod
    def of(cls, me: Owner, cache_users: list[Owner]) -> Owners:
        users = sorted({*cache_users, me})
        return cls(controller=owner_reference(me, True),
                   cache=[owner_reference(u, False) for u in users])


def metadata(name: str, namespace: str, labels: dict[str, str], owners: list[Obj],
             annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    return meta


def pod_metadata(labels: dict[str, str], annotations: dict[str, str]) -> Obj:
    meta: Obj = {"labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security(uid: int | None) -> Obj:
    security: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if uid is not None:
        security |= {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    return security


def restricted_container(read_only_root: bool) -> Obj:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": read_only_root}
