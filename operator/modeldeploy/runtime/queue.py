"""The work queue: every ModelDeployment to reconcile, at most once in the queue and never
twice at a time; new objects before re-checks; failures retried with per-object backoff.

controller-runtime's rate-limited queue is the model: a key added while it is being
reconciled runs again once, after the current run; a key whose reconcile failed comes back
after 1 s, 2 s, 4 s ... up to ``max_backoff``; a success forgets its failures.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum

log = logging.getLogger(__name__)
Key = tuple[str, str]


class Priority(IntEnum):
    NEW = 0      # an object whose spec the operator has not acted on yet
    EVENT = 1    # something it created, or its status, changed
    RESYNC = 2   # the periodic safety net


class WorkQueue:
    def __init__(self, handler: Callable[[Key], Awaitable[bool]], workers: int,
                 base_backoff: float = 1.0, max_backoff: float = 300.0) -> None:
        self._handler = handler
        self._workers = workers
        self._base, self._max = base_backoff, max_backoff
        self._heap: list[tuple[int, int, Key]] = []
        self._queued: dict[Key, int] = {}
        self._active: set[Key] = set()
        self._again: dict[Key, int] = {}
        self._failures: dict[Key, int] = {}
        self._retries: dict[Key, asyncio.TimerHandle] = {}
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self.last_progress = time.monotonic()
        self.done = 0

    def add(self, key: Key, priority: Priority = Priority.EVENT) -> None:
        if key in self._active:
            self._again[key] = min(priority, self._again.get(key, priority))
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= priority:
            return
        self._queued[key] = priority
        heapq.heappush(self._heap, (priority, next(self._seq), key))
        self._ready.set()

    def forget(self, key: Key) -> None:
        """The object is gone: drop its pending retry and its failure count."""
        self._failures.pop(key, None)
        retry = self._retries.pop(key, None)
        if retry is not None:
            retry.cancel()

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def active(self) -> int:
        return len(self._active)

    def stalled(self, timeout: float) -> bool:
        """Work is waiting but nothing has finished for ``timeout`` seconds."""
        busy = bool(self._queued) or bool(self._active)
        return busy and time.monotonic() - self.last_progress > timeout

    async def _next(self) -> Key:
        while True:
            while self._heap:
                priority, _, key = heapq.heappop(self._heap)
                if self._queued.get(key) == priority:
                    del self._queued[key]
                    return key
            self._ready.clear()
            await self._ready.wait()

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    async def _work(self) -> None:
        while True:
            key = await self._next()
            self._active.add(key)
            ok = False
            try:
                ok = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # the handler reports its own errors; this is the last net
                log.exception("reconcile of %s/%s raised", *key)
            finally:
                self._active.discard(key)
                self.last_progress = time.monotonic()
                self.done += 1
            self._settle(key, ok)

    def _settle(self, key: Key, ok: bool) -> None:
        again = self._again.pop(key, None)
        if ok:
            self._failures.pop(key, None)
        else:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(self._max, self._base * 2 ** (failures - 1))
            self._schedule_retry(key, delay)
        if again is not None:
            self.add(key, Priority(again))

    def _schedule_retry(self, key: Key, delay: float) -> None:
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()

        def retry() -> None:
            self._retries.pop(key, None)
            self.add(key, Priority.EVENT)

        self._retries[key] = asyncio.get_running_loop().call_later(delay, retry)

    def backoff_of(self, key: Key) -> int:
        return self._failures.get(key, 0)
