"""A replica larger than one node: the LeaderWorkerSet's actions and status. Pure, except
``lws_installed`` (one cached API call that says whether the cluster serves the kind).

The same decision as for a Deployment: the LeaderWorkerSet is applied when it differs; a
ModelDeployment that moves between one node and several has its old Deployment or
LeaderWorkerSet deleted (they share the pods' label, and so the Service). A group is one
replica: the controller's readyReplicas counts the groups whose every pod is ready.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

from ..actions import Action, Delete, apply_if_differs
from ..api import AVAILABLE, CACHE_READY, Phase, Why
from ..plan import Plan
from ..render.lws import KIND, LWS_TESTED_VERSION, leader_worker_set
from .read import DEPLOYMENT, LEADER_WORKER_SET, Snapshot, Store
from .status import Assessment, condition

Obj = dict[str, Any]

CRD_NAME = "leaderworkersets.leaderworkerset.x-k8s.io"
INSTALL = "https://github.com/kubernetes-sigs/lws"
LWS_VERBS = ("get", "list", "watch", "create", "patch", "delete")
# how long an answer to "does the API serve LeaderWorkerSets" is kept
INSTALLED_TTL = 60.0
MISSING_TTL = 10.0


def group_actions(plan: Plan, owner: Obj | None, snap: Snapshot) -> list[Action]:
    """The LeaderWorkerSet (none while the cluster lacks the kind), and no Deployment."""
    actions: list[Action] = []
    if snap.deployment is not None:
        actions.append(Delete(DEPLOYMENT, plan.namespace, plan.name))
    if snap.lws_installed:
        actions += apply_if_differs(leader_worker_set(plan, owner), snap.lws)
    return actions


def retire_group(plan: Plan, snap: Snapshot) -> list[Action]:
    """A one-node plan keeps no LeaderWorkerSet of an earlier multi-node spec."""
    return [Delete(LEADER_WORKER_SET, plan.namespace, plan.name)] if snap.lws is not None else []


def group_snapshot(snap: Snapshot) -> Snapshot:
    """What status.assess reads of a Deployment, read of the LeaderWorkerSet: its
    readyReplicas are the groups whose every pod is ready; the pods are every group's."""
    return replace(snap, deployment=snap.lws)


def missing_assessment(plan: Plan, assessed: Assessment, forbidden: bool = False) -> Assessment:
    """The cluster has no LeaderWorkerSet API, or the operator may not use it: say what to
    install or grant, keep the cache's state."""
    if forbidden:
        message = (f"{plan.title} is served on {plan.split} by a {KIND}, and RBAC does not let "
                   f"the operator manage {CRD_NAME}: grant it {', '.join(LWS_VERBS)} on them "
                   f"(the chart: rbac.leaderWorkerSets=true), then restart it")
    else:
        message = (f"{plan.title} is served on {plan.split} by a {KIND}, and this cluster has "
                   f"no {CRD_NAME}: install LeaderWorkerSet (version {LWS_TESTED_VERSION} or "
                   f"later, {INSTALL})")
    cache = [c for c in assessed.conditions if c.type == CACHE_READY]
    return Assessment(Phase.PENDING, [*cache, condition(AVAILABLE, False, Why.LWS_MISSING,
                                                        message)],
                      assessed.replicas, 0, assessed.download)


class KindLister(Protocol):
    async def served(self, kind: str, namespace: str) -> bool: ...


async def lws_installed(store: Store, kube: KindLister, namespace: str) -> bool:
    """Whether the API serves LeaderWorkerSets; asked at most once a minute (every 10 s
    while it does not, so an install is seen soon)."""
    known = store.apis.get(LEADER_WORKER_SET)
    if known is not None:
        at, served = known
        if time.monotonic() - at < (INSTALLED_TTL if served else MISSING_TTL):
            return served
    served = await kube.served(LEADER_WORKER_SET, namespace)
    store.apis[LEADER_WORKER_SET] = (time.monotonic(), served)
    return served
