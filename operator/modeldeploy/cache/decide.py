"""Decisions about the weight cache: is it complete, which claim and Job are wanted, and what
to do with claims a ModelDeployment no longer uses. Pure: live objects in, actions out."""

from __future__ import annotations

from typing import Any

from ..actions import Action, Apply, Delete, apply_if_differs
from ..labels import CACHE_COMPLETE_ANNOTATION, RETAIN_ANNOTATION
from ..objects import Owner, Owners
from ..plan import Plan
from .naming import download_job_name
from .objects import cache_claim, coordinates, download_identity, download_job

Obj = dict[str, Any]

# PVC fields that cannot change once it exists (storage can only grow, and only where the
# StorageClass allows): a shared cache keeps what its first user asked for.
_CLAIM_SPEC_FIELDS = ("accessModes", "resources", "storageClassName", "volumeMode")


def is_complete(plan: Plan, claim: Obj | None, job: Obj | None) -> bool:
    annotations = ((claim or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(CACHE_COMPLETE_ANNOTATION) == coordinates(plan):
        return True
    status = (job or {}).get("status") or {}
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in status.get("conditions") or [])


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
                  job: Obj | None) -> list[Action]:
    """The claim (owned by every user, marked complete once it is) and, until then, the Job
    that fills it; a Job's template is immutable, so an existing Job is left as it is."""
    actions = apply_if_differs(wanted_claim(plan, owners, complete, claim), claim)
    if not complete and job is None:
        actions += [Apply(obj) for obj in download_identity(plan, owners.cache)]
        actions.append(Apply(download_job(plan, owners.cache)))
    return actions


def _download_deletes(namespace: str, claim_name: str) -> list[Action]:
    """The Job, then its ServiceAccount, Role and RoleBinding (they share its name)."""
    name = download_job_name(claim_name)
    return [Delete(kind, namespace, name)
            for kind in ("Job", "RoleBinding", "Role", "ServiceAccount")]


def cleanup_actions(plan: Plan, body_generation: int | None,
                    observed_generation: int | None, complete: bool,
                    job: Obj | None) -> list[Action]:
    """A finished download's Job goes once the claim records it (and after the engine's
    objects are applied: a refused Deployment leaves the finished Job to look at). A failed
    one goes when a user of the cache changed its spec since the failure was shown: the next
    reconcile starts a new try."""
    if job is None:
        return []
    retry = download_failed(job) and body_generation != observed_generation
    if complete or retry:
        return _download_deletes(plan.namespace, plan.cache.claim_name)
    return []


def download_failed(job: Obj | None) -> bool:
    return any(c.get("type") == "Failed" and c.get("status") == "True"
               for c in ((job or {}).get("status") or {}).get("conditions") or [])


def prune_actions(me: Owner, wanted: str,
                  owned: list[tuple[Obj, Obj | None]]) -> list[Action]:
    """A claim this deployment no longer uses (its revision or hub changed) loses it as an
    owner; one left without owners is deleted, with its Job, unless it is retained.
    ``owned``: each claim this deployment owns, with its download Job if there is one."""
    actions: list[Action] = []
    for claim, job in owned:
        meta = claim["metadata"]
        if meta["name"] == wanted:
            continue
        refs = meta.get("ownerReferences") or []
        if not any(r.get("uid") == me.uid for r in refs):
            continue
        others = [r for r in refs if r.get("uid") != me.uid]
        retained = (meta.get("annotations") or {}).get(RETAIN_ANNOTATION) == "true"
        if not others and not retained:
            actions.append(Delete("PersistentVolumeClaim", meta["namespace"], meta["name"]))
            if job is not None:
                actions += _download_deletes(meta["namespace"], meta["name"])
        else:
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
