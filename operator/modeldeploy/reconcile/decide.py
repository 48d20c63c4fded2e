"""Decide: one pure function from what a ModelDeployment wants (its plan, or why it has none)
and what the cluster holds (the snapshot) to the actions, the status and the events.

Level-based: the same decision serves create, update, resume and every child event; against a
cluster that already matches it decides nothing, and a status equal to the one shown is no
status write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..actions import Action, Check
from ..api import (
    AVAILABLE,
    CACHE_READY,
    DEGRADED,
    RESOLVED,
    Condition,
    ModelDeploymentStatus,
    Phase,
    PlanError,
    ResolvedPlan,
    Why,
)
from ..cache.decide import (
    cache_actions,
    cleanup_actions,
    is_complete,
    lost_deployment_actions,
    prune_actions,
)
from ..cache.objects import cache_claim, download_identity, download_job
from ..cache.status import cache_view
from ..gateway.handover import autoscaled_actions
from ..gateway.status import desired_replicas, scaling_phase
from ..labels import RETRY_ANNOTATION
from ..objects import Owner, Owners
from ..plan import Plan
from ..render.service import service
from ..render.serving import deployment
from .multinode import group_actions, group_snapshot, missing_assessment, retire_group
from .ownership import (
    conflict_message,
    deployment_actions,
    held_conflicts,
    mark_creates,
    service_actions,
    with_template_hash,
)
from .read import CLAIM, DEPLOYMENT, JOB, LEADER_WORKER_SET, SERVICE, Snapshot
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
    wanted_deployment = with_template_hash(deployment(plan, owners.controller))
    wanted_service = service(plan, owners.controller)
    conflicts = {**held_conflicts([(cache_claim(plan, owners.cache), snap.claim),
                                   (download_job(plan, owners.cache), snap.job),
                                   (wanted_deployment, snap.deployment),
                                   (wanted_service, snap.service)]),
                 **snap.taken}
    if conflicts:
        named = [cache_claim(plan, owners.cache), download_job(plan, owners.cache),
                 *download_identity(plan, owners.cache), wanted_deployment, wanted_service]
        return _conflict(body, old, plan, conflicts, snap.taken, named, now)
    actions = cache_actions(plan, owners, complete, snap.claim, snap.job, snap.job_pods)
    if complete and plan.multi_node:
        actions += group_actions(plan, owners.controller, snap)
    elif complete:
        autoscaled = autoscaled_actions(plan.spec, wanted_deployment, snap.deployment)
        actions += deployment_actions(wanted_deployment, snap.deployment) \
            if autoscaled is None else autoscaled
        actions += retire_group(plan, snap)
    else:  # a Deployment on a deleted claim goes until the weights are back
        actions += lost_deployment_actions(me, plan, snap.claim, snap.deployment,
                                           snap.owned)
        if snap.deployment is None and snap.service is None:
            # a new ModelDeployment: its Deployment comes once the weights are in, but a
            # name taken by someone else's object must show now, before anything is created
            actions.insert(0, Check(wanted_deployment))
    actions += service_actions(wanted_service, snap.service)
    actions += cleanup_actions(plan, meta.get("generation"), old.observedGeneration, complete,
                               snap.job, (meta.get("annotations") or {}).get(RETRY_ANNOTATION))
    actions += prune_actions(me, plan.cache.claim_name, snap.owned, snap.deployment)
    actions = mark_creates(actions, _held(snap))
    view = cache_view(plan, snap.claim, snap.deployment, snap.owned,
                      shared=any(u.uid != me.uid for u in cache_users))
    if snap.claim is None:  # being created: the status says it waits for it to be bound
        snap = replace(snap, claim=cache_claim(plan, []))
    replicas = desired_replicas(plan.spec, snap.deployment)
    if plan.multi_node:
        assessment = assess(group_snapshot(snap), complete, replicas, plan, view)
        if complete and not snap.lws_installed:
            assessment = missing_assessment(plan, assessment, snap.lws_forbidden)
    else:
        assessment = scaling_phase(plan.spec, assess(snap, complete, replicas, plan, view))
    status, events = _status(body, old, plan, assessment, now)
    if view.note is not None and view.note not in _message_of(old, CACHE_READY):
        events.append(Event("Warning", Why.CACHE_CLAIM_DIFFERS, view.note))
    return Decision(actions, status, events)


def _held(snap: Snapshot) -> set[tuple[str, str]]:
    """The objects of the snapshot, by (kind, name): they are ours (the watches see them)."""
    live = [(CLAIM, snap.claim), (JOB, snap.job), (DEPLOYMENT, snap.deployment),
            (SERVICE, snap.service), (LEADER_WORKER_SET, snap.lws),
            *((CLAIM, claim) for claim, _ in snap.owned),
            *((JOB, job) for _, job in snap.owned)]
    return {(kind, obj["metadata"]["name"]) for kind, obj in live if obj is not None}


def _conflict(body: Obj, old: ModelDeploymentStatus, plan: Plan,
              conflicts: dict[tuple[str, str], str], taken: dict[tuple[str, str], str],
              named: list[Obj], now: str) -> Decision:
    """Names held by objects that are not ours: nothing is created, applied or deleted; the
    names known only from a refused create are checked again (one read each)."""
    messages = [conflict_message(kind, name, why)
                for (kind, name), why in sorted(conflicts.items())]
    failed = condition(AVAILABLE, False, Why.NAME_CONFLICT, "; ".join(messages))
    status, events = _status(body, old, plan, Assessment(Phase.FAILED, [failed]), now)
    by_key = {(obj["kind"], obj["metadata"]["name"]): obj for obj in named}
    checks: list[Action] = [Check(by_key[key]) for key in sorted(taken) if key in by_key]
    return Decision(checks, status, events)


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


def _message_of(status: ModelDeploymentStatus, kind: str) -> str:
    return next((c.message for c in status.conditions if c.type == kind), "")


def with_failures(body: Obj, status: Obj | None, refused: list[tuple[str, str, str]],
                  now: str) -> tuple[Obj | None, list[Event]]:
    """The decided status (None: the one shown) with the writes the API server refused, each
    as (kind, name, the server's message): ``Degraded`` says which, and the rest of the
    status still shows what is true. None: the status shown already says so."""
    old = ModelDeploymentStatus.model_validate(body.get("status") or {})
    base = old if status is None else ModelDeploymentStatus.model_validate(status)
    message = "; ".join(f"the API server refused the write of {kind} {name}: {said}"
                        for kind, name, said in refused) + "; retrying with backoff"
    failed = condition(DEGRADED, True, Why.APPLY_FAILED, message)
    kept = [c for c in base.conditions if c.type != DEGRADED]
    merged = merge(old.conditions, [*kept, failed], body["metadata"].get("generation"), now)
    new = base.model_copy(update={"conditions": merged}).model_dump(mode="json",
                                                                    exclude_none=True)
    if new == old.model_dump(mode="json", exclude_none=True):
        return None, []
    warned = _reason_of(old, DEGRADED) == Why.APPLY_FAILED and \
        next(c.message for c in old.conditions if c.type == DEGRADED) == message
    return new, [] if warned else [Event("Warning", Why.APPLY_FAILED, message)]
