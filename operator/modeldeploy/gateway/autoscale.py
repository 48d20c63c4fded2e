"""The autoscaler: replicas from in-flight requests per replica, between minReplicas and
maxReplicas, removing replicas only after the load stayed low for scaleDownDelaySeconds; and
scale from zero when a request comes for a model with none.

``recommend`` and ``decide`` are pure; ``Autoscaler`` runs them on a timer and writes the
Deployment's scale subresource (never the ModelDeployment). The in-flight count is this gateway
process's own: see docs/gateway.md for several gateway replicas.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..api import AutoscalingSpec
from .registry import Model, Registry

log = logging.getLogger(__name__)


def recommend(in_flight: float, scaling: AutoscalingSpec) -> int:
    """Replicas for this much load: ceil(in-flight / target), at least one while there is any."""
    need = math.ceil(in_flight / scaling.targetInFlightPerReplica) if in_flight > 0 else 0
    return max(scaling.minReplicas, min(scaling.maxReplicas, need))


def decide(current: int, samples: list[tuple[float, int]], now: float,
           scaling: AutoscalingSpec) -> int:
    """The replicas to set. ``samples``: (time, recommendation), oldest first. Up at once to
    the newest recommendation; down only to the highest recommendation of the last
    scaleDownDelaySeconds, and only once the samples cover that long."""
    bounded = max(scaling.minReplicas, min(scaling.maxReplicas, current))
    if not samples:
        return bounded
    newest = samples[-1][1]
    if newest >= bounded:
        return newest
    since = now - scaling.scaleDownDelaySeconds
    if samples[0][0] > since:
        return bounded  # not watched long enough to know the load stayed low
    window = [r for t, r in samples if t >= since] or [newest]
    return min(bounded, max(window))


class ScaleClient(Protocol):
    async def get_replicas(self, namespace: str, name: str) -> int | None: ...

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> None: ...


@dataclass
class _State:
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    known: int | None = None
    known_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Autoscaler:
    def __init__(self, registry: Registry, client: ScaleClient,
                 in_flight: Callable[[Model], int], interval: float = 1.0,
                 refresh: float = 30.0, on_scale: Callable[[Model, int, int], None] | None = None
                 ) -> None:
        self.registry, self.client, self.in_flight = registry, client, in_flight
        self.interval, self.refresh = interval, refresh
        self.on_scale = on_scale
        self._states: dict[tuple[str, str], _State] = {}

    def _state(self, model: Model) -> _State:
        return self._states.setdefault(model.key, _State())

    async def _current(self, model: Model, state: _State, fresh: bool) -> int | None:
        if fresh or state.known is None or time.monotonic() - state.known_at > self.refresh:
            state.known = await self.client.get_replicas(model.namespace, model.name)
            state.known_at = time.monotonic()
        return state.known

    async def _set(self, model: Model, state: _State, current: int, replicas: int) -> None:
        await self.client.set_replicas(model.namespace, model.name, replicas)
        state.known, state.known_at = replicas, time.monotonic()
        log.info("scaled %s/%s from %d to %d replicas", model.namespace, model.name, current,
                 replicas)
        if self.on_scale is not None:
            self.on_scale(model, current, replicas)

    async def wake(self, model: Model) -> None:
        """A request wants a replica: scale a model at zero to max(1, minReplicas)."""
        state = self._state(model)
        async with state.lock:
            current = await self._current(model, state, fresh=state.known == 0)
            if current == 0:
                scaling = model.autoscaling
                target = max(1, scaling.minReplicas if scaling else 1)
                await self._set(model, state, 0, target)

    async def tick(self) -> None:
        now = time.monotonic()
        live = set()
        for model in self.registry.models():
            scaling = model.autoscaling
            if scaling is None:
                continue
            live.add(model.key)
            state = self._state(model)
            state.samples.append((now, recommend(self.in_flight(model), scaling)))
            horizon = now - scaling.scaleDownDelaySeconds - self.interval
            while len(state.samples) > 1 and state.samples[1][0] <= horizon:
                state.samples.popleft()
            async with state.lock:
                try:
                    current = await self._current(model, state, fresh=False)
                    if current is None:
                        continue
                    target = decide(current, list(state.samples), now, scaling)
                    if target != current:
                        current = await self._current(model, state, fresh=True)
                        if current is not None and target != current:
                            await self._set(model, state, current, target)
                except Exception as err:  # one model's failure must not stop the others
                    log.warning("autoscaling %s/%s failed: %s", model.namespace, model.name,
                                err)
                    state.known = None
        for key in set(self._states) - live:
            del self._states[key]

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)
