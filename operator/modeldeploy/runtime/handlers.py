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
from ..reconcile.read import CLAIM, DEPLOYMENT, JOB, MODEL_DEPLOYMENT, POD, SERVICE
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


@kopf.index(GROUP, VERSION, PLURAL, id="model-deployments")
def index_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(MODEL_DEPLOYMENT, body, memo)


@kopf.on.event(GROUP, VERSION, PLURAL, id="model-deployment")
def on_model_deployment(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                        **_: Any) -> None:
    _route(MODEL_DEPLOYMENT, event, body, memo)


@kopf.index("v1", "persistentvolumeclaims", labels=MANAGED, id="claims")
def index_claim(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(CLAIM, body, memo)


@kopf.on.event("v1", "persistentvolumeclaims", labels=MANAGED, id="claim")
def on_claim(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _route(CLAIM, event, body, memo)


@kopf.index("batch", "v1", "jobs", labels=MANAGED, id="jobs")
def index_job(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(JOB, body, memo)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job")
def on_job(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _route(JOB, event, body, memo)


@kopf.index("apps", "v1", "deployments", labels=MANAGED, id="deployments")
def index_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(DEPLOYMENT, body, memo)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED, id="deployment")
def on_deployment(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _route(DEPLOYMENT, event, body, memo)


@kopf.index("v1", "services", labels=MANAGED, id="services")
def index_service(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(SERVICE, body, memo)


@kopf.on.event("v1", "services", labels=MANAGED, id="service")
def on_service(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _route(SERVICE, event, body, memo)


@kopf.index("v1", "pods", labels=MANAGED, id="pods")
def index_pod(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _index(POD, body, memo)


@kopf.on.event("v1", "pods", labels=MANAGED, id="pod")
def on_pod(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _route(POD, event, body, memo)
