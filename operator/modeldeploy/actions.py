"""What a reconcile may do to the cluster, as data: create, apply, replace or delete an object,
or check that a name is free; and the comparison that says whether a live object already has
every field we set. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .api.quantity import quantity_value

Obj = dict[str, Any]


@dataclass(frozen=True)
class Apply:
    """Server-side apply of ``obj`` (field manager ``modeldeploy`` unless another is named;
    ``partial``: an apply of a few fields of an object, not the whole of it; ``create``: the
    object is not known to be ours, so it is created (POST), never applied over what holds the
    name: an existing object is applied only if it turns out to be ours)."""

    obj: Obj
    field_manager: str | None = None
    partial: bool = False
    create: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        meta = self.obj["metadata"]
        return self.obj["kind"], meta["namespace"], meta["name"]


@dataclass(frozen=True)
class Delete:
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.namespace, self.name


@dataclass(frozen=True)
class Replace:
    """An update (PUT) of a live object of ours: the object as the API server holds it, with
    ``owned`` (paths into the object, e.g. ``("spec", "template")``) exactly as in ``obj``, our
    labels, annotations and owner references, and no other field manager owning anything
    under the owned paths. What server-side apply alone cannot do: remove what others added."""

    obj: Obj
    owned: tuple[tuple[str, ...], ...]

    @property
    def key(self) -> tuple[str, str, str]:
        meta = self.obj["metadata"]
        return self.obj["kind"], meta["namespace"], meta["name"]


@dataclass(frozen=True)
class Check:
    """That the name ``obj`` will have is free, or held by an object of ours; ``obj`` is the
    object as it would be made (its owner references say who "ours" is)."""

    obj: Obj

    @property
    def key(self) -> tuple[str, str, str]:
        meta = self.obj["metadata"]
        return self.obj["kind"], meta["namespace"], meta["name"]


Action = Apply | Delete | Replace | Check


def apply_if_differs(desired: Obj, live: Obj | None) -> list[Action]:
    if live is None:
        return [Apply(desired, create=True)]
    return [] if matches(desired, live) else [Apply(desired)]


# Maps of resource quantities, which the API server stores in canonical form (1.5Gi as 1536Mi,
# 0.5 as 500m): compared by value.
QUANTITY_MAPS = frozenset({"requests", "limits"})
def _same_quantity(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if not isinstance(live, str):
        return False
    wanted, found = quantity_value(str(desired)), quantity_value(live)
    return wanted is not None and wanted == found


def matches(desired: Any, live: Any) -> bool:
    """True when every field we set has the live value (the server may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and (all(_same_quantity(q, live[k].get(r)) for r, q in v.items())
                           if k in QUANTITY_MAPS and isinstance(v, dict) and
                           isinstance(live[k], dict) else matches(v, live[k]))
            for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            matches(d, item) for d, item in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return bool(desired == live)
