"""What a reconcile may do to the cluster, as data: apply an object or delete one; and the
comparison that says whether a live object already has every field we set. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Apply:
    """Server-side apply of ``obj`` (field manager ``modeldeploy`` unless another is named;
    ``partial``: an apply of a few fields of an object, not the whole of it)."""

    obj: Obj
    field_manager: str | None = None
    partial: bool = False

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


Action = Apply | Delete


def apply_if_differs(desired: Obj, live: Obj | None) -> list[Action]:
    return [] if live is not None and matches(desired, live) else [Apply(desired)]


# Maps of resource quantities, which the API server stores in canonical form (1.5Gi as 1536Mi,
# 0.5 as 500m): compared by value.
QUANTITY_MAPS = frozenset({"requests", "limits"})
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$")
_SUFFIXES: dict[str | None, Decimal] = {
    None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")}}


def quantity_value(text: str) -> Decimal | None:
    """The value of a Kubernetes quantity (``1536Mi``, ``500m``, ``64e9``); None if it is
    not one."""
    found = _QUANTITY.match(text)
    if found is None:
        return None
    number, suffix = found.groups()
    try:
        scale = _SUFFIXES[suffix] if suffix in _SUFFIXES else Decimal(10) ** int(suffix[1:])
        return Decimal(number) * scale
    except (InvalidOperation, ValueError):
        return None


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
