"""Kubernetes quantities (``1536Mi``, ``500m``, ``64e9``) by value. Pure."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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
