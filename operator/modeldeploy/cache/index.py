"""Who uses and who owns which cache claim, kept up to date from the watches.

``uses``: the claim each ModelDeployment's plan wants (set by the handlers of ModelDeployment
events). ``owners``: the owner uids of every managed claim (from the claims' watch). Both are
indexed both ways, so a lookup never scans every known object.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeVar

Key = tuple[str, str]  # (namespace, name)
V = TypeVar("V")


@dataclass
class ClaimIndex:
    _wanted: dict[Key, str] = field(default_factory=dict)
    _users: dict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
    _owner_uids: dict[Key, frozenset[str]] = field(default_factory=dict)
    _owned: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def want(self, key: Key, claim: str | None) -> None:
        """Record the claim ``key`` wants now (None: it wants none, e.g. its spec is invalid)."""
        before = self._wanted.pop(key, None)
        if before is not None:
            self._discard(self._users, (key[0], before), key)
        if claim is not None:
            self._wanted[key] = claim
            self._users[(key[0], claim)].add(key)

    def wanted(self, key: Key) -> str | None:
        return self._wanted.get(key)

    def users(self, namespace: str, claim: str) -> list[Key]:
        """Every ModelDeployment that wants this claim, by name."""
        return sorted(self._users.get((namespace, claim), ()))

    def observe(self, namespace: str, claim: str, owner_uids: frozenset[str] | None) -> None:
        """A claim's owners as the watch shows them (None: the claim is gone)."""
        key = (namespace, claim)
        for uid in self._owner_uids.pop(key, frozenset()):
            self._discard(self._owned, (namespace, uid), claim)
        if owner_uids is not None:
            self._owner_uids[key] = owner_uids
            for uid in owner_uids:
                self._owned[(namespace, uid)].add(claim)

    def owned_by(self, namespace: str, uid: str) -> list[str]:
        return sorted(self._owned.get((namespace, uid), ()))

    @staticmethod
    def _discard(index: dict[tuple[str, str], set[V]], key: tuple[str, str], value: V) -> None:
        values = index.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del index[key]
