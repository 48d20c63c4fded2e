"""Read: the snapshot one reconcile decides on, from the in-memory store the watches feed.

The store holds every object the operator watches (ModelDeployments, and the claims, Jobs,
Deployments, Services and pods it manages), trimmed to what decisions read, with indexes for
the lookups a reconcile makes (pods by Job and by Deployment, claims by user and owner). A
reconcile in steady state makes no GET or LIST: only a claim that is not bound yet has its
events listed, to say why.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..cache.index import ClaimIndex
from ..cache.naming import download_job_name
from ..labels import CACHE_LABEL, DEPLOYMENT_LABEL
from ..plan import Plan
from .ownership import trim_managed_fields

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

MODEL_DEPLOYMENT = "ModelDeployment"
CLAIM = "PersistentVolumeClaim"
JOB = "Job"
DEPLOYMENT = "Deployment"
SERVICE = "Service"
POD = "Pod"
LEADER_WORKER_SET = "LeaderWorkerSet"  # the serving object of a replica larger than a node
KINDS = (MODEL_DEPLOYMENT, CLAIM, JOB, DEPLOYMENT, SERVICE, POD, LEADER_WORKER_SET)
JOB_NAME_LABEL = "job-name"


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconcile of one ModelDeployment decides on."""

    claim: Obj | None = None
    claim_events: list[Obj] = field(default_factory=list)
    job: Obj | None = None
    job_pods: list[Obj] = field(default_factory=list)
    deployment: Obj | None = None
    pods: list[Obj] = field(default_factory=list)
    service: Obj | None = None
    # the other claims this ModelDeployment owns, each with its download Job (to prune)
    owned: list[tuple[Obj, Obj | None]] = field(default_factory=list)
    # names of ours held by objects the watches do not show (found by a refused create or a
    # check), by (kind, name): why each is not ours
    taken: dict[tuple[str, str], str] = field(default_factory=dict)
    lws: Obj | None = None
    lws_installed: bool = True  # whether the API serves LeaderWorkerSets (multi-node plans)
    lws_forbidden: bool = False  # RBAC does not let the operator manage them


def trim(kind: str, body: Obj) -> Obj:
    """What decisions read of an object: of managedFields only who owns a Deployment's
    replicas and what other managers own of its pod template, of a pod only its identity,
    node and status (its spec is the template the operator rendered)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    if kind == DEPLOYMENT:  # who owns the replicas and who else owns the pod template
        meta["managedFields"] = trim_managed_fields(
            (body.get("metadata") or {}).get("managedFields") or [])
    if kind == POD:
        keep = ("name", "namespace", "uid", "labels", "deletionTimestamp")
        return {"metadata": {k: meta[k] for k in keep if k in meta},
                "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
                "status": body.get("status") or {}}
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}


def _key(body: Obj) -> Key:
    meta = body["metadata"]
    return meta.get("namespace") or "", meta["name"]


@dataclass
class Store:
    """The watched objects by kind and (namespace, name), and the indexes reconciles use."""

    objects: dict[str, dict[Key, Obj]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    claims: ClaimIndex = field(default_factory=ClaimIndex)
    _pods_by_owner: dict[tuple[str, str, str], dict[str, Obj]] = field(
        default_factory=lambda: defaultdict(dict))
    # when a pending claim's events were last listed, and what they were
    claim_events: dict[Key, tuple[float, list[Obj]]] = field(default_factory=dict)
    # kinds whose API may be missing (LeaderWorkerSet): when last asked, and the answer
    apis: dict[str, tuple[float, bool]] = field(default_factory=dict)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects[kind].get((namespace, name))

    def put(self, kind: str, body: Obj, only_newer: bool = False) -> Obj:
        """Store the object; ``only_newer``: unless the store already holds a later version
        (an apply's response can come back after the watch delivered the next change)."""
        trimmed = trim(kind, body)
        key = _key(trimmed)
        before = self.objects[kind].get(key)
        if only_newer and before is not None and _newer(before, trimmed):
            return before
        self.objects[kind][key] = trimmed
        if kind == POD:
            if before is not None:
                self._unindex_pod(before)
            for group in _pod_groups(trimmed):
                self._pods_by_owner[group][key[1]] = trimmed
        elif kind == CLAIM:
            refs = trimmed["metadata"].get("ownerReferences") or []
            self.claims.observe(key[0], key[1], frozenset(r["uid"] for r in refs
                                                         if r.get("uid")))
        return trimmed

    def remove(self, kind: str, namespace: str, name: str) -> Obj | None:
        gone = self.objects[kind].pop((namespace, name), None)
        if gone is not None and kind == POD:
            self._unindex_pod(gone)
        elif kind == CLAIM:
            self.claims.observe(namespace, name, None)
        return gone

    def _unindex_pod(self, pod: Obj) -> None:
        for group in _pod_groups(pod):
            pods = self._pods_by_owner.get(group)
            if pods is not None:
                pods.pop(pod["metadata"]["name"], None)
                if not pods:
                    del self._pods_by_owner[group]

    def pods(self, namespace: str, label: str, value: str) -> list[Obj]:
        pods = self._pods_by_owner.get((namespace, label, value), {})
        return [pods[name] for name in sorted(pods)]

    def count(self, kind: str) -> int:
        return len(self.objects[kind])


def _newer(a: Obj, b: Obj) -> bool:
    """Whether a is a later version of the same object than b. Resource versions are opaque
    to clients, but the API server's are etcd revisions: integers that only grow."""
    try:
        return int(a["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


def _pod_groups(pod: Obj) -> list[tuple[str, str, str]]:
    labels = pod["metadata"].get("labels") or {}
    namespace = pod["metadata"].get("namespace") or ""
    return [(namespace, label, labels[label]) for label in (JOB_NAME_LABEL, DEPLOYMENT_LABEL)
            if label in labels]


def snapshot(store: Store, plan: Plan, uid: str) -> Snapshot:
    """The snapshot from the store alone (the claim's events are the caller's to add)."""
    ns, claim_name = plan.namespace, plan.cache.claim_name
    job_name = download_job_name(claim_name)
    owned = [(claim, store.get(JOB, ns, download_job_name(name)))
             for name in store.claims.owned_by(ns, uid) if name != claim_name
             for claim in [store.get(CLAIM, ns, name)] if claim is not None]
    return Snapshot(
        claim=store.get(CLAIM, ns, claim_name),
        job=store.get(JOB, ns, job_name),
        job_pods=store.pods(ns, JOB_NAME_LABEL, job_name),
        deployment=store.get(DEPLOYMENT, ns, plan.name),
        pods=store.pods(ns, DEPLOYMENT_LABEL, plan.name),
        service=store.get(SERVICE, ns, plan.name),
        owned=owned,
        lws=store.get(LEADER_WORKER_SET, ns, plan.name),
    )


class EventLister(Protocol):
    async def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]: ...


def needs_claim_events(snap: Snapshot) -> bool:
    claim = snap.claim
    return claim is not None and (claim.get("status") or {}).get("phase") != "Bound"


# A pending claim's events are listed at most this often (a burst of new objects would
# otherwise list them once per reconcile of each).
CLAIM_EVENTS_TTL = 5.0


async def read(store: Store, kube: EventLister, plan: Plan, uid: str) -> Snapshot:
    snap = snapshot(store, plan, uid)
    if not needs_claim_events(snap):
        store.claim_events.pop((plan.namespace, plan.cache.claim_name), None)
        return snap
    key = (plan.namespace, plan.cache.claim_name)
    listed = store.claim_events.get(key)
    if listed is None or time.monotonic() - listed[0] > CLAIM_EVENTS_TTL:
        events = await kube.list("Event", plan.namespace, fields={
            "involvedObject.kind": CLAIM, "involvedObject.name": plan.cache.claim_name})
        listed = store.claim_events[key] = (time.monotonic(), events)
    return replace(snap, claim_events=listed[1])


def concerned(store: Store, kind: str, body: Obj) -> list[Key]:
    """The ModelDeployments an event of a child concerns."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or ""
    labels = meta.get("labels") or {}
    if kind == MODEL_DEPLOYMENT:
        return [(namespace, meta["name"])]
    if DEPLOYMENT_LABEL in labels:
        return [(namespace, labels[DEPLOYMENT_LABEL])]
    if CACHE_LABEL not in labels:
        return []
    users = store.claims.users(namespace, labels[CACHE_LABEL])
    if kind == CLAIM:  # a claim nobody wants any more still concerns its owners
        owners = [(namespace, r["name"]) for r in meta.get("ownerReferences") or []
                  if r.get("kind") == MODEL_DEPLOYMENT]
        return list(dict.fromkeys([*users, *owners]))
    return users
