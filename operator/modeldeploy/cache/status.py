"""What the cache's lifecycle says in the status: the weights that serve while others
download, a claim deleted under the engine, and a shared claim made with other settings than
this spec asks for. Pure: live objects in, conditions and sentences out.

A shared claim keeps the settings it was made with (its size, StorageClass and access mode):
a claim cannot shrink or move to another class, and growing one succeeds only where its
StorageClass allows volume expansion, for every user at once. So the operator never changes
them; a user whose spec asks for more than the claim has is told so, with both values, in its
``CacheReady`` message and one Warning event (``CacheClaimDiffers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import CACHE_READY, Condition, ConditionStatus, Why
from ..labels import HUB_ANNOTATION, REVISION_ANNOTATION
from ..plan import Plan
from ..plan.sizing import quantity_bytes
from .decide import claim_lost, mounted_claims, terminating

Obj = dict[str, Any]


@dataclass(frozen=True)
class Serving:
    """The claim the live Deployment serves from while the wanted weights are not complete."""

    claim: str
    revision: str | None = None
    hub: str | None = None


@dataclass(frozen=True)
class CacheView:
    """What the status says of the cache beyond its own claim and Job."""

    lost: Condition | None = None  # the claim under the engine is gone or being deleted
    serving: Serving | None = None  # the previous weights serve meanwhile
    note: str | None = None  # a shared claim made with other settings than asked for


def cache_view(plan: Plan, claim: Obj | None, deployment: Obj | None,
               owned: list[tuple[Obj, Obj | None]], shared: bool) -> CacheView:
    """``shared``: other ModelDeployments use these weights too."""
    return CacheView(lost=lost_condition(plan, claim, deployment),
                     serving=previous_weights(plan, deployment, owned),
                     note=claim_differs(plan, claim, shared))


def lost_condition(plan: Plan, claim: Obj | None, deployment: Obj | None) -> Condition | None:
    name = plan.cache.claim_name
    after = ("the weights are downloaded again into a new claim and the engine starts once "
             "they are complete")
    if terminating(claim):
        return _condition(False, Why.CACHE_DELETED,
                          f"cache claim {name} is being deleted: the Deployment and the "
                          f"download that hold it open are removed; once it is gone, {after}")
    if claim_lost(claim) and deployment is not None and name in mounted_claims(deployment):
        return _condition(False, Why.CACHE_DELETED,
                          f"cache claim {name} was deleted under the serving Deployment: the "
                          f"Deployment is removed and {after}")
    return None


def previous_weights(plan: Plan, deployment: Obj | None,
                     owned: list[tuple[Obj, Obj | None]]) -> Serving | None:
    """The other claim the live Deployment mounts (a revision or hub change: its replicas
    keep serving the old weights until the new ones are complete), unless it is lost too."""
    if deployment is None or terminating(deployment):
        return None
    others = sorted(mounted_claims(deployment) - {plan.cache.claim_name})
    if not others:
        return None
    claims = {c["metadata"]["name"]: c for c, _ in owned}
    old = claims.get(others[0])
    if old is not None and terminating(old):
        return None
    annotations = ((old or {}).get("metadata") or {}).get("annotations") or {}
    return Serving(others[0], annotations.get(REVISION_ANNOTATION),
                   annotations.get(HUB_ANNOTATION))


def serving_condition(cache: Condition, serving: Serving, plan: Plan) -> Condition:
    """The wanted cache's condition, saying which weights serve meanwhile."""
    old = f"revision {serving.revision}" if serving.revision else "the previous weights"
    new = f"revision {plan.revision}"
    if serving.hub and serving.hub != plan.hub.value:
        old, new = f"{old} of {serving.hub}", f"{new} of {plan.hub.value}"
    if cache.reason == Why.DOWNLOADING:
        message = f"serving {old} from cache {serving.claim} while {new} downloads: " \
                  f"{cache.message}"
    else:
        message = f"serving {old} from cache {serving.claim}; {new}: {cache.message}"
    return cache.model_copy(update={"message": message})


def claim_differs(plan: Plan, claim: Obj | None, shared: bool) -> str | None:
    """The sentence for a claim made with less (or other) than this spec asks for."""
    if claim is None or terminating(claim):
        return None
    meta, spec = claim.get("metadata") or {}, claim.get("spec") or {}
    differences = []
    made = str(((spec.get("resources") or {}).get("requests") or {}).get("storage") or "")
    made_bytes, asked_bytes = quantity_bytes(made), quantity_bytes(plan.cache.size)
    if made_bytes is not None and asked_bytes is not None and made_bytes < asked_bytes:
        differences.append(("size", made, plan.cache.size))
    made_class = spec.get("storageClassName")
    if plan.cache.storage_class and made_class and made_class != plan.cache.storage_class:
        differences.append(("storageClassName", made_class, plan.cache.storage_class))
    made_modes = spec.get("accessModes") or []
    if made_modes and plan.cache.access_mode not in made_modes:
        differences.append(("accessMode", ",".join(made_modes), plan.cache.access_mode))
    if not differences:
        return None
    made_with = ", ".join(f"{field} {value}" for field, value, _ in differences)
    asked = ", ".join(f"{field} {value}" for field, _, value in differences)
    was = "is shared and was" if shared else "was"
    return (f"cache claim {meta.get('name')} {was} made with {made_with}; this spec "
            f"asks for {asked}: a claim keeps what it was made with (set the same cache "
            f"settings on every user of these weights, or expand the claim by hand where its "
            f"StorageClass allows volume expansion)")


def with_note(cache: Condition, note: str | None) -> Condition:
    if note is None:
        return cache
    return cache.model_copy(update={"message": f"{cache.message}; {note}"})


def _condition(ok: bool, reason: str, message: str) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    return Condition(type=CACHE_READY, status=status, reason=reason, message=message)
