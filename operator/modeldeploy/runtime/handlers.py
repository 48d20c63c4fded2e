"""kopf wiring: the watches feed the store, events queue reconciles, a resync backs them up.

kopf runs the watches (list, then watch; a watch that ends or expires is re-established and
re-lists when its resource version is too old). Its index handlers run for every listed or
changed object before any other handler, and kopf holds every other handler back until the
initial listing of every indexed kind is done: so the store is primed before the first
reconcile, and a restart re-checks every object against complete caches. The event handlers
only route: they queue the ModelDeployments an event concerns. kopf itself writes nothing to
the objects (stateless handlers: no progress annotations, no finalizers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from .. import GROUP, PLURAL, VERSION
from ..labels import MANAGED_BY, MANAGED_BY_VALUE
from ..reconcile.read import (
    CLAIM,
    DEPLOYMENT,
    JOB,
    LEADER_WORKER_SET,
    MODEL_DEPLOYMENT,
    POD,
    SERVICE,
)
from .kube import Kube
from .metrics import QUEUE_DEPTH, RESYNC_PASSES, WATCH_EVENTS
from .operator import Obj, Operator
from .queue import Priority, WorkQueue

log = logging.getLogger("modeldeploy")
MANAGED = {MANAGED_BY: MANAGED_BY_VALUE}
# Reconciles running at once. More only queue for the same HTTP connections (and the API
# server's priority-and-fairness seats), which costs the operator CPU for nothing.
MAX_CONCURRENT_RECONCILES = 16
# The liveness endpoint fails when work waits this long with no reconcile finishing.
STALL_SECONDS = 300.0
WATCH_SERVER_TIMEOUT = 300


def _operator(memo: Any) -> Operator:
    operator: Operator = memo.operator
    return operator


def _plain(body: kopf.Body) -> Obj:
    """The raw object (kopf's body is a view of it); nested values are shared, never changed."""
    return dict(body)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    # a watch connection that hangs (an API server that stopped answering) is cut and redone
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + 60
    operator = _operator(memo)
    operator.kube = Kube()
    operator.queue = WorkQueue(operator.reconcile, MAX_CONCURRENT_RECONCILES)
    memo.tasks = [asyncio.create_task(operator.queue.run(), name="modeldeploy work queue"),
                  asyncio.create_task(_resync(operator, memo.resync_seconds, memo),
                                      name="modeldeploy resync")]
    memo.last_resync = time.monotonic()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _resync(operator: Operator, period: float, memo: kopf.Memo) -> None:
    """Every object once per period, through the same bounded queue, at the lowest priority.
    A failing pass is logged and the next one runs anyway."""
    while True:
        await asyncio.sleep(period)
        try:
            assert operator.queue is not None
            for key in list(operator.store.objects[MODEL_DEPLOYMENT]):
                operator.queue.add(key, Priority.RESYNC)
            RESYNC_PASSES.inc()
        except Exception:
            log.exception("resync pass failed")
        memo.last_resync = time.monotonic()


@kopf.on.probe(id="reconcile-loop")
def reconcile_loop_alive(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: the queue and the resync must keep moving, the watches must be running."""
    operator = _operator(memo)
    queue = operator.queue
    if queue is None:
        return "starting"
    QUEUE_DEPTH.set(len(queue))
    for task in getattr(memo, "tasks", []):
        if task.done():
            raise kopf.PermanentError(f"{task.get_name()} stopped")
    if queue.stalled(STALL_SECONDS):
        raise kopf.PermanentError(f"no reconcile finished in {STALL_SECONDS:.0f}s "
                                  f"with {len(queue)} waiting")
    if time.monotonic() - memo.last_resync > 3 * memo.resync_seconds:
        raise kopf.PermanentError("the periodic resync has not run for three periods")
    return f"{len(queue)} waiting, {queue.active} running, {queue.done} done"


def _index(kind: str, body: kopf.Body, memo: kopf.Memo) -> None:
    """Runs first for every listed or changed object: the store is current before any
    reconcile reads it. Returns nothing to kopf: the store is the index."""
    _operator(memo).observe(kind, _plain(body))


def _route(kind: str, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo) -> None:
    operator = _operator(memo)
    WATCH_EVENTS.labels(kind).inc()
    plain = _plain(body)
    if event.get("type") == "DELETED":
        operator.observe_deleted(kind, plain)
    if operator.queue is None:
        return
    for key, priority in operator.concerned(kind, plain, event.get("type")):
        operator.queue.add(key, priority)


# What the operator watches: its own resource (every one) and the kinds it manages (those
# with its managed-by label), each with an index handler (feeds the store, primes it) and an
# event handler (routes the event to the reconciles it concerns).
WATCHED: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {
    MODEL_DEPLOYMENT: ((GROUP, VERSION, PLURAL), None),
    CLAIM: (("v1", "persistentvolumeclaims"), MANAGED),
    JOB: (("batch", "v1", "jobs"), MANAGED),
    DEPLOYMENT: (("apps", "v1", "deployments"), MANAGED),
    SERVICE: (("v1", "services"), MANAGED),
    POD: (("v1", "pods"), MANAGED),
    # served only where LeaderWorkerSet is installed: kopf watches a kind the API lacks once
    # its CRD appears, and until then warns and serves the others. Registered only when the
    # operator may list and watch it (watch_leader_worker_sets): a watch RBAC refuses would
    # hold every other handler back, kopf waiting for its first listing.
    LEADER_WORKER_SET: (("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"), MANAGED),
}


def _register(kind: str, resource: tuple[str, ...], labels: dict[str, str] | None) -> None:
    def index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _index(kind, body, memo)

    def route(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _route(kind, event, body, memo)

    filters: dict[str, Any] = {"labels": labels} if labels else {}
    kopf.index(*resource, id=f"index-{kind.lower()}", **filters)(index)
    kopf.on.event(*resource, id=f"route-{kind.lower()}", **filters)(route)


for _kind, (_resource, _labels) in WATCHED.items():
    if _kind != LEADER_WORKER_SET:
        _register(_kind, _resource, _labels)


def watch_leader_worker_sets() -> None:
    _register(LEADER_WORKER_SET, *WATCHED[LEADER_WORKER_SET])
