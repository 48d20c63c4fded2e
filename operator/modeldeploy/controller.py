"""kopf wiring: events in, one reconcile per ModelDeployment at a time, status out.

Handlers only route. Every ModelDeployment event, every event of a child the operator
manages, and a periodic resync run the same level-based ``reconcile``. The handlers are
kopf's stateless event handlers, so kopf itself writes nothing to the objects (no progress
annotations, no finalizers): re-applying an unchanged spec writes nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
from lightkube import ApiError
from prometheus_client import Counter, Histogram, start_http_server

from . import GROUP, KIND, PLURAL, VERSION
from .api import ModelDeploymentStatus
from .catalog import Catalog, load_catalog
from .conditions import AVAILABLE, Why, condition, merge, now
from .config import OperatorConfig, load_config
from .errors import PlanError
from .kube import Kube
from .labels import CACHE_LABEL, DEPLOYMENT_LABEL, MANAGED_BY, MANAGED_BY_VALUE
from .reconcile import Owner, plan_for, reconcile

log = logging.getLogger("modeldeploy")
Key = tuple[str, str]
Obj = dict[str, Any]

RECONCILES = Counter("modeldeploy_reconciles_total", "Reconciles by result", ["result"])
RECONCILE_SECONDS = Histogram("modeldeploy_reconcile_duration_seconds", "Reconcile duration")
STATUS_WRITES = Counter("modeldeploy_status_writes_total", "Status writes")
CHILD_WRITES = Counter("modeldeploy_child_writes_total", "Applies and deletes of children")

MANAGED = {MANAGED_BY: MANAGED_BY_VALUE}
RESYNC_SECONDS = 60.0
# Reconciles running at once. More only queue for the same HTTP connections (and the API
# server's priority-and-fairness seats), which costs the operator CPU for nothing.
MAX_CONCURRENT_RECONCILES = 16


@dataclass
class State:
    """What the handlers share: the latest body and cache claim of every ModelDeployment."""

    catalog: Catalog
    config: OperatorConfig
    kube: Kube | None = None
    bodies: dict[Key, Obj] = field(default_factory=dict)
    claims: dict[Key, str] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    queued: set[Key] = field(default_factory=set)
    # owner uids of every managed cache claim, from the claims' watch: which claims an
    # object still owns besides the one it wants, without listing them all per reconcile
    claim_owners: dict[Key, frozenset[str]] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES))

    def remember(self, body: Obj) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.bodies[key] = body
        try:
            self.claims[key] = plan_for(body, self.catalog, self.config).cache.claim_name
        except PlanError:
            self.claims.pop(key, None)
        return key

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.claims.pop(key, None)
        self.locks.pop(key, None)

    def cache_users(self, namespace: str, claim: str) -> list[Owner]:
        return [Owner(k[1], self.bodies[k]["metadata"]["uid"])
                for k, c in self.claims.items() if k[0] == namespace and c == claim]

    def keys_using(self, namespace: str, claim: str) -> list[Key]:
        return [k for k, c in self.claims.items() if k[0] == namespace and c == claim]

    def claims_owned_by(self, namespace: str, uid: str) -> list[str]:
        return sorted(k[1] for k, uids in self.claim_owners.items()
                      if k[0] == namespace and uid in uids)

    def observe_claim(self, event_type: str | None, claim: Obj) -> list[Key]:
        """Remember a claim's owners; returns the objects it concerns (users and owners)."""
        meta = claim["metadata"]
        key = (meta["namespace"], meta["name"])
        refs = meta.get("ownerReferences") or []
        if event_type == "DELETED":
            self.claim_owners.pop(key, None)
        else:
            self.claim_owners[key] = frozenset(r["uid"] for r in refs if r.get("uid"))
        labels = meta.get("labels") or {}
        users = self.keys_using(key[0], labels[CACHE_LABEL]) if CACHE_LABEL in labels else []
        owners = [(key[0], r["name"]) for r in refs if r.get("kind") == KIND]
        return list(dict.fromkeys([*users, *owners]))


def _state(memo: Any) -> State:
    state: State = memo.state
    return state


async def run_one(state: State, key: Key) -> None:
    """Reconcile one ModelDeployment; never raises (errors become status and logs)."""
    if key not in state.bodies or state.kube is None or key in state.queued:
        return  # a run is already waiting: it starts after the current one and sees this too
    state.queued.add(key)
    async with state.locks.setdefault(key, asyncio.Lock()), state.slots:
        state.queued.discard(key)
        body = state.bodies.get(key)
        if body is None:
            return
        started = time.monotonic()
        claim = state.claims.get(key)
        users = state.cache_users(key[0], claim) if claim else []
        owned = state.claims_owned_by(key[0], body["metadata"]["uid"])
        try:
            outcome = await reconcile(state.kube, body, state.catalog, state.config, users,
                                      owned)
        except ApiError as err:
            RECONCILES.labels("error").inc()
            await _report_api_error(state.kube, body, err)
            return
        finally:
            RECONCILE_SECONDS.observe(time.monotonic() - started)
        CHILD_WRITES.inc(outcome.writes)
        RECONCILES.labels("invalid" if outcome.status and outcome.status.get("phase") ==
                          "Invalid" else "ok").inc()
        if outcome.status is not None:
            await state.kube.patch_status(key[0], key[1], outcome.status)
            STATUS_WRITES.inc()
            body["status"] = outcome.status
        for kind, reason, message in outcome.events:
            _post(body, kind, reason, message)
            log.info("%s %s/%s: %s", reason, key[0], key[1], message)


async def _report_api_error(kube: Kube, body: Obj, err: ApiError) -> None:
    """A refused write (RBAC, admission, quota) becomes the Available condition and an event."""
    meta = body["metadata"]
    message = f"the Kubernetes API refused a change: {err.status.message}"
    log.error("reconcile of %s/%s failed: %s", meta["namespace"], meta["name"], message)
    old = ModelDeploymentStatus.model_validate(body.get("status") or {})
    if any(c.type == AVAILABLE and c.message == message for c in old.conditions):
        return  # already reported
    kept = [c for c in old.conditions if c.type != AVAILABLE]
    failed = condition(AVAILABLE, False, Why.API_ERROR, message)
    merged = merge(old.conditions, [*kept, failed], meta.get("generation"), now())
    with contextlib.suppress(ApiError):
        await kube.patch_status(meta["namespace"], meta["name"], {
            "conditions": [c.model_dump(mode="json", exclude_none=True) for c in merged]})
    _post(body, "Warning", Why.API_ERROR, message)


def _post(body: Obj, kind: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=kind, reason=reason, message=message)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    state = _state(memo)
    state.kube = Kube()
    memo.resync = asyncio.create_task(_resync(state))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()


async def _resync(state: State) -> None:
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        for key in list(state.bodies):
            await run_one(state, key)


def _plain(body: Any) -> Obj:
    plain: Obj = json.loads(json.dumps(dict(body)))
    return plain


@kopf.on.event(GROUP, VERSION, PLURAL, id="modeldeployment")
async def on_model_deployment(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                              **_: Any) -> None:
    state = _state(memo)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if event.get("type") == "DELETED":
        state.forget(key)  # the garbage collector removes what it alone owned
        return
    previous = state.bodies.get(key)
    state.remember(_plain(body))
    if previous is not None and _only_status_changed(previous, body):
        return  # our own status write coming back
    await run_one(state, key)


def _only_status_changed(previous: Obj, body: kopf.Body) -> bool:
    meta = body["metadata"]
    return bool(previous["metadata"].get("generation") == meta.get("generation") and
                previous["metadata"].get("uid") == meta.get("uid") and
                previous.get("status") == dict(body.get("status") or {}))


async def _on_child(body: kopf.Body, memo: kopf.Memo) -> None:
    state = _state(memo)
    meta = body["metadata"]
    labels = meta.get("labels") or {}
    keys: Iterable[Key] = []
    if DEPLOYMENT_LABEL in labels:
        keys = [(meta["namespace"], labels[DEPLOYMENT_LABEL])]
    elif CACHE_LABEL in labels:
        keys = state.keys_using(meta["namespace"], labels[CACHE_LABEL])
    for key in keys:
        await run_one(state, key)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED, id="child-deployment")
async def on_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _on_child(body, memo)


@kopf.on.event("v1", "services", labels=MANAGED, id="child-service")
async def on_service(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _on_child(body, memo)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="child-job")
async def on_job(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _on_child(body, memo)


@kopf.on.event("v1", "persistentvolumeclaims", labels=MANAGED, id="child-claim")
async def on_claim(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    for key in state.observe_claim(event.get("type"), _plain(body)):
        await run_one(state, key)


@kopf.on.event("v1", "pods", labels=MANAGED, id="child-pod")
async def on_pod(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _on_child(body, memo)


class _WithoutRoutineSuccess(logging.Filter):
    """kopf says "Handler 'x' succeeded." for every event it hands over: noise at info."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and
                    record.getMessage().endswith("' succeeded."))


def _configure_logging(level: str) -> None:
    """JSON lines; at info, the operator's own decisions and every warning, without a line
    per HTTP request or per handled event (--log-level debug shows those)."""
    debug = level == "debug"
    kopf.configure(log_format=kopf.LogFormat.JSON, debug=debug, quiet=level == "warning")
    if not debug:
        for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(_WithoutRoutineSuccess())


def run_operator(namespaces: list[str], config_path: Path | None, catalog_paths: list[Path],
                 metrics_port: int, health_port: int, log_level: str = "info") -> int:
    config = load_config(config_path)
    catalog = load_catalog(catalog_paths)
    _configure_logging(log_level)
    if metrics_port:
        start_http_server(metrics_port)
    memo = kopf.Memo(state=State(catalog=catalog, config=config))
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, memo=memo,
             liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None)
    return 0
