"""One reconcile of one ModelDeployment: plan, apply what differs, observe, report.

Level-based: the same function serves create, update, resume and every child event. It
reads the children, applies (server-side, one field manager) only objects whose fields
differ from the desired ones, prunes what is no longer desired, and returns the status the
ModelDeployment must show. A second run against the same state writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from . import API_VERSION, KIND
from .api import ModelDeploymentSpec, ModelDeploymentStatus, Phase, ResolvedPlan
from .catalog import Catalog
from .conditions import AVAILABLE, RESOLVED, Why, condition, merge, now
from .config import OperatorConfig
from .desired import cache_is_complete, desired_children, matches
from .errors import PlanError
from .gateway.handover import apply_autoscaled
from .gateway.status import desired_replicas, scaling_phase
from .kube import Kube
from .labels import DEPLOYMENT_LABEL, RETAIN_ANNOTATION, download_job_name
from .observe import Assessment, Observed, assess
from .plan import Plan, make_plan
from .render import Owners, endpoint

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    name: str
    uid: str


@dataclass
class Outcome:
    """What one reconcile decided: the status to write (None: unchanged) and events."""

    status: Obj | None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, msg)
    writes: int = 0


def plan_for(body: Obj, catalog: Catalog, config: OperatorConfig) -> Plan:
    meta = body["metadata"]
    try:
        spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        raise PlanError("InvalidSpec", f"invalid spec: {err.errors()[0]['msg']}") from err
    return make_plan(meta["name"], meta["namespace"], spec, catalog, config)


def owner_reference(owner: Owner, controller: bool) -> Obj:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": controller, "blockOwnerDeletion": controller}


async def reconcile(kube: Kube, body: Obj, catalog: Catalog, config: OperatorConfig,
                    cache_users: list[Owner], owned_claims: list[str]) -> Outcome:
    """``cache_users``: every object that wants the same cache (its owners);
    ``owned_claims``: the cache claims this object owns now, as last seen."""
    meta = body["metadata"]
    old = ModelDeploymentStatus.model_validate(body.get("status") or {})
    try:
        plan = plan_for(body, catalog, config)
    except PlanError as err:
        invalid = [condition(RESOLVED, False, err.reason, err.message),
                   condition(AVAILABLE, False, Why.INVALID, err.message)]
        return _outcome(body, old, Phase.INVALID, invalid, None, None,
                        Assessment(Phase.INVALID, invalid))
    me = Owner(meta["name"], meta["uid"])
    users = sorted({*cache_users, me}, key=lambda o: o.name)
    owners = Owners(controller=owner_reference(me, True),
                    cache=[owner_reference(u, False) for u in users])
    ns, claim_name = plan.namespace, plan.cache.claim_name
    claim = await kube.get("PersistentVolumeClaim", ns, claim_name)
    job_name = download_job_name(claim_name)
    job = await kube.get("Job", ns, job_name)
    complete = cache_is_complete(plan, claim, job)
    writes = 0
    for obj in desired_children(plan, config, cache_complete=complete, owners=owners,
                                live_claim=claim):
        live = {"PersistentVolumeClaim": claim, "Job": job}.get(obj["kind"])
        if obj["kind"] not in ("PersistentVolumeClaim", "Job"):
            live = await kube.get(obj["kind"], ns, obj["metadata"]["name"])
        if obj["kind"] == "Job" and live is not None:
            continue  # a Job's template is immutable; it is replaced only by a new claim
        if obj["kind"] == "Deployment":
            live, handed = await apply_autoscaled(kube, plan.spec, obj, live)
            writes += handed
        if live is None or not matches(obj, live):
            applied = await kube.apply(obj)
            writes += 1
            if obj["kind"] == "PersistentVolumeClaim":
                claim = applied
    if complete and job is not None:
        await kube.delete("Job", ns, job_name)
        writes += 1
    writes += await _prune_claims(kube, ns, claim_name, me, owned_claims)
    observed = await _observe(kube, plan, complete, claim, job)
    assessment = scaling_phase(plan.spec, assess(observed, desired_replicas(
        plan.spec, observed.deployment)))
    resolved = condition(RESOLVED, True, Why.RESOLVED,
                         f"{plan.title} on {plan.engine.value}: {plan.gpus} GPU(s) per replica")
    outcome = _outcome(body, old, assessment.phase, [resolved, *assessment.conditions], plan,
                       endpoint(plan, config), assessment)
    outcome.writes += writes
    return outcome


async def _observe(kube: Kube, plan: Plan, complete: bool, claim: Obj | None,
                   job: Obj | None) -> Observed:
    ns = plan.namespace
    if not complete:
        claim_events: list[Obj] = []
        if claim is not None and (claim.get("status") or {}).get("phase") != "Bound":
            claim_events = await kube.list("Event", ns, fields={
                "involvedObject.kind": "PersistentVolumeClaim",
                "involvedObject.name": plan.cache.claim_name})
        job_pods = await kube.list("Pod", ns, labels={
            "job-name": download_job_name(plan.cache.claim_name)}) if job else []
        return Observed(False, claim, claim_events, job, job_pods)
    deployment = await kube.get("Deployment", ns, plan.name)
    pods = await kube.list("Pod", ns, labels={DEPLOYMENT_LABEL: plan.name})
    return Observed(True, claim, deployment=deployment, pods=pods)


async def _prune_claims(kube: Kube, ns: str, desired_claim: str, me: Owner,
                        owned_claims: list[str]) -> int:
    """A claim this deployment no longer uses (its revision or hub changed) loses it as an
    owner; one left without owners is deleted unless retained."""
    writes = 0
    for name in owned_claims:
        if name == desired_claim:
            continue
        claim = await kube.get("PersistentVolumeClaim", ns, name)
        if claim is None:
            continue
        meta = claim["metadata"]
        refs = meta.get("ownerReferences") or []
        if not any(r.get("uid") == me.uid for r in refs):
            continue  # the watch was behind: it no longer names this object
        others = [r for r in refs if r.get("uid") != me.uid]
        retained = (meta.get("annotations") or {}).get(RETAIN_ANNOTATION) == "true"
        if not others and not retained:
            await kube.delete("PersistentVolumeClaim", ns, meta["name"])
            await kube.delete("Job", ns, download_job_name(meta["name"]))
        else:
            await kube.apply(_without_owner(claim, others))
        writes += 1
    return writes


def _without_owner(claim: Obj, owners: list[Obj]) -> Obj:
    """The claim as this manager applied it, with fewer owners (fields it leaves out of an
    apply would be removed)."""
    meta = claim["metadata"]
    kept = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    spec = {k: claim["spec"][k] for k in ("accessModes", "resources", "storageClassName",
                                          "volumeMode") if k in claim["spec"]}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {**kept, "ownerReferences": owners}, "spec": spec}


def _outcome(body: Obj, old: ModelDeploymentStatus, phase: Phase, conditions: list[Any],
             plan: Plan | None, url: str | None, assessment: Assessment) -> Outcome:
    generation = body["metadata"].get("generation")
    merged = merge(old.conditions, conditions, generation, now())
    resolved = None if plan is None else ResolvedPlan(
        modelId=plan.model_id, revision=plan.revision, hub=plan.hub, engine=plan.engine,
        image=plan.image, gpusPerReplica=plan.gpus, tensorParallelSize=plan.tensor_parallel,
        maxModelLen=plan.max_model_len, cacheClaim=plan.cache.claim_name,
        servedModelName=plan.served_model_name)
    new = ModelDeploymentStatus(
        phase=phase, conditions=merged, resolved=resolved, endpoint=url,
        replicas=assessment.replicas if plan else None,
        readyReplicas=assessment.ready_replicas if plan else None,
        observedGeneration=generation)
    new_dump = new.model_dump(mode="json", exclude_none=True)
    if new_dump == old.model_dump(mode="json", exclude_none=True):
        return Outcome(status=None)
    events = []
    if phase != old.phase:
        events.append(("Normal", "Phase", f"{old.phase.value if old.phase else 'New'} -> "
                                          f"{phase.value}"))
    problem = assessment.problem
    if problem is not None and _reason_of(old, problem.type) != problem.reason:
        events.append(("Warning", problem.reason, problem.message))
    return Outcome(status=new_dump, events=events)


def _reason_of(status: ModelDeploymentStatus, kind: str) -> str | None:
    return next((c.reason for c in status.conditions if c.type == kind), None)
