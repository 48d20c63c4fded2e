"""Choosing a replica: fewest in-flight requests, or prompt-prefix affinity while the preferred
replica is not overloaded. In-flight counts are this gateway process's own."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterable
from typing import Any


def prompt_prefix(body: dict[str, Any], chars: int) -> str | None:
    """The first ``chars`` characters of the prompt (chat messages in order, a completion's
    prompt, or embeddings' input); None when there is none or affinity is off."""
    if chars <= 0:
        return None
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [str(p.get("text", "")) for p in content
                          if isinstance(p, dict) and p.get("type") == "text"]
            if sum(map(len, parts)) >= chars:
                break
    else:
        prompt = body.get("prompt", body.get("input"))
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        if isinstance(prompt, str):
            parts.append(prompt)
    text = "\x1e".join(parts)[:chars]
    return text or None


def _score(prefix: str, address: str) -> bytes:
    return hashlib.blake2b(f"{prefix}\x00{address}".encode(), digest_size=8).digest()


class Balancer:
    def __init__(self, affinity_max_imbalance: int = 4, cooldown: float = 5.0) -> None:
        self.in_flight: dict[str, int] = {}
        self.affinity_max_imbalance = affinity_max_imbalance
        self.cooldown = cooldown
        self._failed: dict[str, float] = {}
        self._turn = itertools.count()

    def failed(self, address: str) -> None:
        """A connection to ``address`` failed: others go first for a while (until the
        EndpointSlices catch up)."""
        self._failed[address] = time.monotonic() + self.cooldown

    def pick(self, addresses: Iterable[str], prefix: str | None = None,
             exclude: frozenset[str] = frozenset()) -> str | None:
        candidates = [a for a in addresses if a not in exclude]
        if not candidates:
            return None
        if self._failed:
            now = time.monotonic()
            for address, until in list(self._failed.items()):
                if until <= now:
                    del self._failed[address]
            healthy = [a for a in candidates if a not in self._failed]
            candidates = healthy or candidates
        counts = self.in_flight
        least = min(counts.get(a, 0) for a in candidates)
        if prefix is not None:
            # rendezvous hashing: the same prefix ranks the replicas the same way everywhere
            for address in sorted(candidates, key=lambda a: _score(prefix, a), reverse=True):
                if counts.get(address, 0) <= least + self.affinity_max_imbalance:
                    return address
        idle = [a for a in candidates if counts.get(a, 0) == least]
        return idle[next(self._turn) % len(idle)]

    def acquire(self, address: str) -> None:
        self.in_flight[address] = self.in_flight.get(address, 0) + 1

    def release(self, address: str) -> None:
        left = self.in_flight.get(address, 0) - 1
        if left > 0:
            self.in_flight[address] = left
        else:
            self.in_flight.pop(address, None)
