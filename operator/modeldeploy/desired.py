"""The set of children one reconcile wants, and whether a live object already matches. Pure."""

from __future__ import annotations

from typing import Any

from .config import OperatorConfig
from .labels import CACHE_COMPLETE_ANNOTATION
from .plan import Plan
from .render import Owners, render, weights_coordinates

Obj = dict[str, Any]

# PVC fields that cannot change once it exists (storage can only grow, and only where the
# StorageClass allows): a shared cache keeps what its first user asked for.
_CLAIM_SPEC_FIELDS = ("accessModes", "resources", "storageClassName", "volumeMode")


def cache_is_complete(plan: Plan, claim: Obj | None, job: Obj | None) -> bool:
    annotations = ((claim or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(CACHE_COMPLETE_ANNOTATION) == weights_coordinates(plan):
        return True
    status = (job or {}).get("status") or {}
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def desired_children(plan: Plan, config: OperatorConfig, *, cache_complete: bool,
                     owners: Owners, live_claim: Obj | None) -> list[Obj]:
    """Claim and Job first; the Deployment only once the weights are complete."""
    objects = render(plan, config, cache_complete=cache_complete, owners=owners)
    if not cache_complete:
        objects = [o for o in objects if o["kind"] != "Deployment"]
    for obj in objects:
        if obj["kind"] == "PersistentVolumeClaim":
            if cache_complete:
                obj["metadata"].setdefault("annotations", {})[CACHE_COMPLETE_ANNOTATION] = \
                    weights_coordinates(plan)
            if live_claim is not None:
                live_spec = live_claim.get("spec") or {}
                obj["spec"] = {k: live_spec[k] for k in _CLAIM_SPEC_FIELDS if k in live_spec}
    return objects


def matches(desired: Any, live: Any) -> bool:
    """True when every field we set has the live value (the server may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and matches(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            matches(d, item) for d, item in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return bool(desired == live)
