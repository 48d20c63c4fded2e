"""Decisions about the weight cache: is it complete, which claim and Job are wanted, and what
to do with claims a ModelDeployment no longer uses. Pure: live objects in, actions out.

The rules of the cache's lifecycle:

- The claim and its download Job (with the Job's ServiceAccount, Role and RoleBinding) are
  owned by every user of the weights, none of them as controller (no one ModelDeployment
  controls a shared cache): the owners follow the users as they come and go, on a running Job
  too (owner references are mutable), so deleting one user never restarts the download.
- A Job is immutable in its template: a running Job whose spec differs from the one the
  operator renders now (another loader image or arguments, from a new operator config) is
  deleted, and the next reconcile starts it again; a finished one is left as it is.
- A claim that is deleted (or being deleted) is not complete, whatever it recorded: the
  Deployment that mounts it and the Job that fills it are removed (their pods hold the claim
  open: it would never go), a new claim is made once the old one is gone, and the weights are
  downloaded again before the engine starts anew.
- A claim the serving Deployment still mounts is never pruned: after a revision (or hub)
  change the old replicas keep serving from the old claim until the new weights are complete,
  the Deployment is switched and rolled out; only then is the old claim pruned.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from ..actions import Action, Apply, Delete, apply_if_differs, matches
from ..labels import CACHE_COMPLETE_ANNOTATION, RETAIN_ANNOTATION
from ..objects import Owner, Owners
from ..plan import Plan
from .naming import download_job_name
from .objects import TOKEN_ENV, cache_claim, coordinates, download_identity, download_job

Obj = dict[str, Any]

# PVC fields that cannot change once it exists (storage can only grow, and only where the
# StorageClass allows): a shared cache keeps what its first user asked for.
_CLAIM_SPEC_FIELDS = ("accessModes", "resources", "storageClassName", "volumeMode")


def terminating(obj: Obj | None) -> bool:
    return bool(((obj or {}).get("metadata") or {}).get("deletionTimestamp"))


def claim_lost(claim: Obj | None) -> bool:
    """The claim is gone or being deleted: whatever it held cannot be served from."""
    return claim is None or terminating(claim)


def is_complete(plan: Plan, claim: Obj | None, job: Obj | None) -> bool:
    """The claim holds the weights: it says so, or its download Job finished. A claim that is
    gone or being deleted holds nothing to serve, whatever a Job says."""
    if claim_lost(claim):
        return False
    annotations = ((claim or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(CACHE_COMPLETE_ANNOTATION) == coordinates(plan):
        return True
    return job_complete(job)


def job_complete(job: Obj | None) -> bool:
    return _job_condition(job, "Complete")


def download_failed(job: Obj | None) -> bool:
    return _job_condition(job, "Failed")


def _job_condition(job: Obj | None, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in ((job or {}).get("status") or {}).get("conditions") or [])


def wanted_claim(plan: Plan, owners: Owners, complete: bool, live: Obj | None) -> Obj:
    claim = cache_claim(plan, owners.cache)
    if complete:
        claim["metadata"].setdefault("annotations", {})[CACHE_COMPLETE_ANNOTATION] = \
            coordinates(plan)
    if live is not None:
        live_spec = live.get("spec") or {}
        claim["spec"] = {k: live_spec[k] for k in _CLAIM_SPEC_FIELDS if k in live_spec}
    return claim


def cache_actions(plan: Plan, owners: Owners, complete: bool, claim: Obj | None,
                  job: Obj | None, job_pods: list[Obj] | None = None) -> list[Action]:
    """The claim (owned by every user, marked complete once it is) and, until then, the Job
    that fills it, with owners that follow the claim's users. ``job_pods``: the pods of the
    Job's name (a replaced Job's pod may still run)."""
    if terminating(claim):  # nothing may write into it; its Job only holds it open
        return _download_deletes(plan.namespace, plan.cache.claim_name) if job else []
    actions = apply_if_differs(wanted_claim(plan, owners, complete, claim), claim)
    if claim is None and job is not None:
        # the Job of a claim that was deleted: it filled (or fills) what is gone
        return [*actions, Delete("Job", plan.namespace, job["metadata"]["name"])]
    if not complete:
        actions += job_actions(plan, owners, job, job_pods or [])
    return actions


def job_actions(plan: Plan, owners: Owners, job: Obj | None,
                job_pods: list[Obj] | None = None) -> list[Action]:
    """Create the download Job (its identity first), once no pod of a Job it replaces runs
    any more (two downloads never write into one claim); replace a running one made from
    another template; give a live one the owners the claim has."""
    identity = download_identity(plan, owners.cache)
    wanted = download_job(plan, owners.cache)
    if job is None:
        if any(_running(pod) for pod in job_pods or []):
            return []  # the pod's deletion brings the next reconcile
        return [*(Apply(obj) for obj in identity), Apply(wanted)]
    if terminating(job):
        return []
    # the hub token is the choice of the user whose spec made the Job: the users of a shared
    # cache may name different Secrets, and none of them replaces the Job for it
    wanted = _with_live_token(wanted, job)
    if not matches(wanted["spec"], job.get("spec") or {}):
        if job_complete(job) or download_failed(job):
            return []  # finished: a failed one is retried by a spec change (cleanup_actions)
        return [Delete("Job", plan.namespace, job["metadata"]["name"])]
    if _owners_differ(wanted, job) or not matches(_labels_and_annotations(wanted), job):
        # the identity objects are applied with the Job: they are not watched, and always
        # have the Job's owners
        return [*(Apply(obj) for obj in identity), Apply(wanted)]
    return []


def _running(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _with_live_token(wanted: Obj, live: Obj) -> Obj:
    def containers(job: Obj) -> list[Obj]:
        spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        found: list[Obj] = spec.get("containers") or []
        return found

    live_containers = {c.get("name"): c for c in containers(live)}
    rendered = copy.deepcopy(wanted)
    for container in containers(rendered):
        theirs = live_containers.get(container["name"]) or {}
        token = [e for e in theirs.get("env") or [] if e.get("name") in TOKEN_ENV]
        container["env"] = [e for e in container.get("env") or []
                            if e.get("name") not in TOKEN_ENV] + token
    return rendered


def _owners_differ(wanted: Obj, live: Obj) -> bool:
    def refs(obj: Obj) -> set[tuple[str, bool]]:
        return {(str(r.get("uid")), bool(r.get("controller")))
                for r in (obj.get("metadata") or {}).get("ownerReferences") or []}
    return refs(wanted) != refs(live)


def _labels_and_annotations(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {"metadata": {k: meta[k] for k in ("labels", "annotations") if k in meta}}


def mounted_claims(deployment: Obj | None) -> set[str]:
    """The claims the live Deployment's pod template mounts."""
    spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return {str(v["persistentVolumeClaim"].get("claimName"))
            for v in spec.get("volumes") or [] if v.get("persistentVolumeClaim")}


def rolled_out(deployment: Obj | None) -> bool:
    """Every pod of the Deployment runs its current template (no old replica is left that
    may still mount what the template no longer names)."""
    if deployment is None:
        return True
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    if generation is not None and int(status.get("observedGeneration") or 0) < int(generation):
        return False
    return int(status.get("replicas") or 0) <= int(status.get("updatedReplicas") or 0)


def lost_deployment_actions(me: Owner, plan: Plan, claim: Obj | None,
                            deployment: Obj | None,
                            owned: list[tuple[Obj, Obj | None]]) -> list[Action]:
    """The Deployment (one this ModelDeployment controls) goes when a claim it mounts is gone
    or being deleted: left in place it would hold a deleted claim open forever, or start pods
    on an empty new one."""
    if deployment is None or terminating(deployment):
        return []
    refs = (deployment.get("metadata") or {}).get("ownerReferences") or []
    if not any(r.get("uid") == me.uid and r.get("controller") for r in refs):
        return []
    mounted = mounted_claims(deployment)
    lost = {plan.cache.claim_name} if claim_lost(claim) else set()
    lost |= {c["metadata"]["name"] for c, _ in owned if terminating(c)}
    if mounted & lost:
        return [Delete("Deployment", plan.namespace, deployment["metadata"]["name"])]
    return []


def _download_deletes(namespace: str, claim_name: str) -> list[Action]:
    """The Job, then its ServiceAccount, Role and RoleBinding (they share its name)."""
    name = download_job_name(claim_name)
    return [Delete(kind, namespace, name)
            for kind in ("Job", "RoleBinding", "Role", "ServiceAccount")]


def cleanup_actions(plan: Plan, body_generation: int | None,
                    observed_generation: int | None, complete: bool,
                    job: Obj | None, retry_asked: str | None = None) -> list[Action]:
    """A finished download's Job goes once the claim records it (and after the engine's
    objects are applied: a refused Deployment leaves the finished Job to look at). A failed
    one goes when a user of the cache changed its spec since the failure was shown, or asked
    for a retry (``retry_asked``: its retry annotation, a time after the failure): the next
    reconcile starts a new try."""
    if job is None:
        return []
    retry = download_failed(job) and (body_generation != observed_generation or
                                      retry_after_failure(retry_asked, job))
    if complete or retry:
        return _download_deletes(plan.namespace, plan.cache.claim_name)
    return []


def retry_after_failure(asked: str | None, job: Obj) -> bool:
    """The retry annotation names a time after the Job failed. A time, not any new value:
    users of a shared cache with different values never retry in turn for ever."""
    failed_at = next((c.get("lastTransitionTime") for c in
                      ((job.get("status") or {}).get("conditions") or [])
                      if c.get("type") == "Failed" and c.get("status") == "True"), None)
    when, since = _utc(asked), _utc(failed_at)
    return when is not None and since is not None and when > since


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def prune_actions(me: Owner, wanted: str, owned: list[tuple[Obj, Obj | None]],
                  deployment: Obj | None = None) -> list[Action]:
    """A claim this deployment no longer uses (its revision or hub changed) loses it as an
    owner; one left without owners is deleted, with its Job, unless it is retained. While the
    live Deployment may still read from a claim (its template mounts it, or a rollout runs:
    the old replicas may mount one the template no longer names), it is kept as it is.
    ``owned``: each claim this deployment owns, with its download Job if there is one."""
    actions: list[Action] = []
    if not rolled_out(deployment):
        return []
    reading = mounted_claims(deployment)
    for claim, job in owned:
        meta = claim["metadata"]
        if meta["name"] == wanted or meta["name"] in reading:
            continue
        refs = meta.get("ownerReferences") or []
        if not any(r.get("uid") == me.uid for r in refs):
            continue
        others = [r for r in refs if r.get("uid") != me.uid]
        retained = (meta.get("annotations") or {}).get(RETAIN_ANNOTATION) == "true"
        if not others and not retained:
            if not terminating(claim):
                actions.append(Delete("PersistentVolumeClaim", meta["namespace"],
                                      meta["name"]))
            if job is not None:
                actions += _download_deletes(meta["namespace"], meta["name"])
        elif not terminating(claim):
            actions.append(Apply(_without_owner(claim, others)))
    return actions


def _without_owner(claim: Obj, owners: list[Obj]) -> Obj:
    """The claim as this manager applied it, with fewer owners (fields it leaves out of an
    apply would be removed)."""
    meta = claim["metadata"]
    kept = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    spec = {k: claim["spec"][k] for k in _CLAIM_SPEC_FIELDS if k in claim["spec"]}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {**kept, "ownerReferences": owners}, "spec": spec}
