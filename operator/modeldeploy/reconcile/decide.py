"""Decide: one pure function from what a ModelDeployment wants (its plan, or why it has none)
and what the cluster holds (the snapshot) to the actions, the status and the events.

Level-based: the same decision serves create, update, resume and every child event; against a
cluster that already matches it decides nothing, and a status equal to the one shown is no
status write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..actions import Action, apply_if_differs
from ..api import (
    AVAILABLE,
    RESOLVED,
    Condition,
    ModelDeploymentStatus,
    Phase,
    PlanError,
    ResolvedPlan,
    Why,
)
from ..cache.decide import cache_actions, cleanup_actions, is_complete, prune_actions
from ..cache.objects import cache_claim
from ..gateway.handover import autoscaled_actions
from ..gateway.status import desired_replicas, scaling_phase
from ..objects import Owner, Owners
from ..plan import Plan
from ..render.service import service
from ..render.serving import deployment
from .multinode import group_actions, group_snapshot, missing_assessment, retire_group
from .read import Snapshot
from .status import Assessment, assess, condition, merge

Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    actions: list[Action] = field(default_factory=list)
    status: Obj | None = None  # None: the status shown is already right
    events: list[Event] = field(default_factory=list)


def decide(body: Obj, plan: Plan | PlanError, snap: Snapshot, cache_users: list[Owner],
           now: str) -> Decision:
    """``cache_users``: every ModelDeployment that wants the same cache (they all own it)."""
    meta = body["metadata"]
    old = ModelDeploymentStatus.model_validate(body.get("status") or {})
    if isinstance(plan, PlanError):
        invalid = [condition(RESOLVED, False, plan.reason, plan.message),
                   condition(AVAILABLE, False, Why.INVALID, plan.message)]
        status, events = _status(body, old, None, Assessment(Phase.INVALID, invalid), now)
        return Decision([], status, events)
    me = Owner(meta["name"], meta["uid"])
    owners = Owners.of(me, cache_users)
    complete = is_complete(plan, snap.claim, snap.job)
    actions = cache_actions(plan, owners, complete, snap.claim, snap.job)
    if complete and plan.multi_node:
        actions += group_actions(plan, owners.controller, snap)
    elif complete:
        wanted = deployment(plan, owners.controller)
        autoscaled = autoscaled_actions(plan.spec, wanted, snap.deployment)
        actions += apply_if_differs(wanted, snap.deployment) if autoscaled is None \
            else autoscaled
        actions += retire_group(plan, snap)
    actions += apply_if_differs(service(plan, owners.controller), snap.service)
    actions += cleanup_actions(plan, meta.get("generation"), old.observedGeneration, complete,
                               snap.job)
    actions += prune_actions(me, plan.cache.claim_name, snap.owned)
    if snap.claim is None:  # being created: the status says it waits for it to be bound
        snap = replace(snap, claim=cache_claim(plan, []))
    replicas = desired_replicas(plan.spec, snap.deployment)
    if plan.multi_node:
        assessment = assess(group_snapshot(snap), complete, replicas)
        if complete and not snap.lws_installed:
            assessment = missing_assessment(plan, assessment, snap.lws_forbidden)
    else:
        assessment = scaling_phase(plan.spec, assess(snap, complete, replicas))
    status, events = _status(body, old, plan, assessment, now)
    return Decision(actions, status, events)


def resolved_condition(plan: Plan) -> Condition:
    split = f"{plan.split} per replica" if plan.multi_node else \
        f"{plan.gpus} GPU(s) per replica"
    return condition(RESOLVED, True, Why.RESOLVED, f"{plan.title} on {plan.engine.value}: {split}")


def _status(body: Obj, old: ModelDeploymentStatus, plan: Plan | None, assessment: Assessment,
            now: str) -> tuple[Obj | None, list[Event]]:
    generation = body["metadata"].get("generation")
    conditions = assessment.conditions if plan is None else [resolved_condition(plan),
                                                              *assessment.conditions]
    new = ModelDeploymentStatus(
        phase=assessment.phase, conditions=merge(old.conditions, conditions, generation, now),
        resolved=None if plan is None else _resolved(plan),
        endpoint=None if plan is None else plan.endpoint,
        download=assessment.download,
        replicas=assessment.replicas if plan else None,
        readyReplicas=assessment.ready_replicas if plan else None,
        observedGeneration=generation)
    new_dump = new.model_dump(mode="json", exclude_none=True)
    if new_dump == old.model_dump(mode="json", exclude_none=True):
        return None, []
    events = []
    if assessment.phase != old.phase:
        before = old.phase.value if old.phase else "New"
        events.append(Event("Normal", "Phase", f"{before} -> {assessment.phase.value}"))
    problem = assessment.problem
    if problem is not None and _reason_of(old, problem.type) != problem.reason:
        events.append(Event("Warning", problem.reason, problem.message))
    return new_dump, events


def _resolved(plan: Plan) -> ResolvedPlan:
    return ResolvedPlan(
        modelId=plan.model_id, revision=plan.revision, hub=plan.hub, engine=plan.engine,
        image=plan.image, gpusPerReplica=plan.gpus_per_replica,
        tensorParallelSize=plan.tensor_parallel,
        maxModelLen=plan.max_model_len, cacheClaim=plan.cache.claim_name,
        servedModelName=plan.served_model_name,
        **({"nodesPerReplica": plan.nodes, "pipelineParallelSize": plan.pipeline_parallel,
            "split": plan.split} if plan.multi_node else {}))


def _reason_of(status: ModelDeploymentStatus, kind: str) -> str | None:
    return next((c.reason for c in status.conditions if c.type == kind), None)
