"""What is ours, and how drift of what is ours is repaired. Pure: objects in, verdicts and
actions out.

The rule: an object is ours when it carries the managed-by label of modeldeploy and every owner
reference it has is to a ModelDeployment allowed to own it (the ModelDeployment itself for its
Deployment and Service; any ModelDeployment for the shared cache's claim, Job and download
identity, which every user of the cache owns). An object without owner references but with the
label is ours too (orphaned from us). Any other object is never modified, adopted or deleted: a
name held by one is a ``NameConflict``.

Drift: the Service's selector, type and ports, and the whole pod template of the Deployment,
are ours. A live object whose fields differ from the rendered ones, whose rendered template
changed (the template hash annotation), or whose pod template another field manager owns
fields of (a container, a volume, ``hostNetwork`` added by hand), is put back by an update
(:class:`~modeldeploy.actions.Replace`) that also removes the other managers' claims on those
fields. The autoscaled Deployment's ``replicas`` are outside what is owned: the scaler keeps
them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from .. import API_VERSION, GROUP, KIND
from ..actions import Action, Apply, Replace, matches
from ..labels import MANAGED_BY, MANAGED_BY_VALUE

Obj = dict[str, Any]

FIELD_MANAGER = "modeldeploy"
TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"
# `kubectl rollout restart` stamps the pod template with this annotation: a restart asked for
# by hand is not drift, and a repair keeps it
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

# what of each kind is ours whole (anything else in those fields is put back)
SERVICE_OWNED = (("spec", "type"), ("spec", "selector"), ("spec", "ports"))
DEPLOYMENT_SPEC_FIELDS = ("replicas", "selector", "strategy", "progressDeadlineSeconds",
                          "template")


def _is_model_deployment(ref: Obj) -> bool:
    return bool(ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION)


def foreign_reason(desired: Obj, live: Obj) -> str | None:
    """Why ``live``, which holds the name ``desired`` would have, is not ours; None: it is.
    ``desired`` says who may own it: a controller reference names the one ModelDeployment
    (its Deployment, its Service), references without a controller say it is shared."""
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY) != MANAGED_BY_VALUE:
        return (f"it was not created by modeldeploy (it has no "
                f"{MANAGED_BY}={MANAGED_BY_VALUE} label)")
    wanted = (desired.get("metadata") or {}).get("ownerReferences") or []
    controller = next((r for r in wanted if r.get("controller")), None)
    for ref in meta.get("ownerReferences") or []:
        owner = f"{ref.get('kind', '?')} {ref.get('name', '?')}"
        if not _is_model_deployment(ref):
            return f"it is owned by {owner}"
        if controller is not None and ref.get("uid") != controller.get("uid"):
            return f"it belongs to another {owner} (uid {ref.get('uid')})"
    return None


def conflict_message(kind: str, name: str, why: str) -> str:
    return (f"{kind} {name} already exists and is not this ModelDeployment's: {why}. "
            f"modeldeploy leaves it as it is and creates nothing for this ModelDeployment "
            f"until the name is free: delete or rename that {kind}, or give the "
            f"ModelDeployment another name")


def held_conflicts(pairs: Iterable[tuple[Obj, Obj | None]]) -> dict[tuple[str, str], str]:
    """The live objects of the snapshot (desired, live) that hold a name of ours but are not
    ours (they carry our label, so the watches see them), by (kind, name)."""
    found = {}
    for desired, live in pairs:
        if live is None:
            continue
        why = foreign_reason(desired, live)
        if why is not None:
            found[(desired["kind"], desired["metadata"]["name"])] = why
    return found


def mark_creates(actions: list[Action], held: set[tuple[str, str]]) -> list[Action]:
    """Applies of objects the snapshot does not hold become creates: the name may be taken by
    an object the watches never show (one without our label)."""
    marked: list[Action] = []
    for action in actions:
        if isinstance(action, Apply) and not action.partial and not action.create and \
                (action.key[0], action.key[2]) not in held:
            action = Apply(action.obj, action.field_manager, create=True)
        marked.append(action)
    return marked


# -- drift -----------------------------------------------------------------------------------

def template_hash(deployment: Obj) -> str:
    rendered = json.dumps(deployment["spec"]["template"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(rendered.encode()).hexdigest()[:16]


def with_template_hash(deployment: Obj) -> Obj:
    """The rendered Deployment, annotated with the hash of its rendered pod template (what the
    operator last wanted: a change of the rendering shows even where fields were removed)."""
    meta = deployment["metadata"]
    annotations = {**(meta.get("annotations") or {}),
                   TEMPLATE_HASH_ANNOTATION: template_hash(deployment)}
    return {**deployment, "metadata": {**meta, "annotations": annotations}}


def _without(fields: Obj, path: tuple[str, ...]) -> Obj:
    """A managedFields ``fieldsV1`` tree without the subtree at ``path``."""
    if not path:
        return {}
    key = f"f:{path[0]}"
    if key not in fields:
        return fields
    rest = _without(fields[key], path[1:])
    trimmed = {k: v for k, v in fields.items() if k != key}
    if rest and set(rest) != {"."}:
        trimmed[key] = rest
    return trimmed


def _template_claims(entry: Obj) -> Obj:
    """What a managedFields entry owns under ``spec.template``, less a restart's stamp."""
    owned = ((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:template") or {}
    return _without(owned, ("metadata", "annotations", RESTARTED_AT))


def foreign_template_managers(live: Obj) -> list[str]:
    """Field managers other than the operator that own fields of the pod template."""
    return sorted({str(entry.get("manager")) for entry in
                   (live.get("metadata") or {}).get("managedFields") or []
                   if entry.get("manager") != FIELD_MANAGER and _template_claims(entry)})


def trim_managed_fields(entries: list[Obj]) -> list[Obj]:
    """What decisions read of a Deployment's managedFields: who owns its replicas, and what
    managers other than the operator own of its pod template."""
    kept = []
    for entry in entries:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        trimmed: Obj = {}
        if "f:replicas" in spec:
            trimmed["f:replicas"] = {}
        if entry.get("manager") != FIELD_MANAGER:
            claims = _template_claims(entry)
            if claims:
                trimmed["f:template"] = claims
        if trimmed:
            kept.append({"manager": entry.get("manager"), "fieldsV1": {"f:spec": trimmed}})
    return kept


def deployment_owned(desired: Obj) -> tuple[tuple[str, ...], ...]:
    """The Deployment's fields that are ours: every spec field rendered (an autoscaled one's
    replicas are not: the scaler's)."""
    return tuple(("spec", k) for k in DEPLOYMENT_SPEC_FIELDS if k in desired["spec"])


def deployment_actions(desired: Obj, live: Obj | None) -> list[Action]:
    if live is None:
        return [Apply(desired, create=True)]
    if matches(desired, live) and not foreign_template_managers(live):
        return []
    return [Replace(desired, deployment_owned(desired))]


def service_actions(desired: Obj, live: Obj | None) -> list[Action]:
    if live is None:
        return [Apply(desired, create=True)]
    return [] if matches(desired, live) else [Replace(desired, SERVICE_OWNED)]


def _get(obj: Obj, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _set(obj: Obj, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    if value is None:
        obj.pop(path[-1], None)
    else:
        obj[path[-1]] = copy.deepcopy(value)


def replaced(live: Obj, desired: Obj, owned: tuple[tuple[str, ...], ...]) -> Obj:
    """The body of the update that repairs ``live``: the owned paths exactly as rendered, our
    labels, annotations and owner references over the live ones, no other manager owning
    anything under the owned paths; its resourceVersion makes the update fail rather than
    overwrite a change made since the object was read."""
    body = copy.deepcopy(live)
    body.pop("status", None)
    meta, want = body["metadata"], desired["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **(want.get("labels") or {})}
    annotations = {**(meta.get("annotations") or {}), **(want.get("annotations") or {})}
    if annotations:
        meta["annotations"] = annotations
    if want.get("ownerReferences"):
        meta["ownerReferences"] = copy.deepcopy(want["ownerReferences"])
    restarted = _get(live, ("spec", "template", "metadata", "annotations", RESTARTED_AT))
    for path in owned:
        _set(body, path, _get(desired, path))
    if restarted is not None and ("spec", "template") in owned:
        body["spec"]["template"].setdefault("metadata", {}).setdefault(
            "annotations", {})[RESTARTED_AT] = restarted
    entries = []
    for entry in meta.get("managedFields") or []:
        if entry.get("manager") != FIELD_MANAGER:
            fields = entry.get("fieldsV1") or {}
            for path in owned:
                fields = _without(fields, path)
            if not fields:
                continue
            entry = {**entry, "fieldsV1": fields}
        entries.append(entry)
    # a list the API server takes as it is ([{}]: none left, which it would otherwise ignore)
    meta["managedFields"] = entries or [{}]
    return body
