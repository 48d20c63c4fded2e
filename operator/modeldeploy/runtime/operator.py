"""The operator's state and one reconcile: read -> decide -> execute, with the error edge.

``Operator`` holds the watch-fed store, each ModelDeployment's plan (computed when its spec
changes, so every cache's users are known before the first reconcile), the resource versions
of the operator's own writes (their watch events queue no reconcile) and the work queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError

from ..api import AVAILABLE, ModelDeploymentStatus, Phase, PlanError, Why
from ..catalog import Catalog
from ..config import OperatorConfig
from ..objects import Owner
from ..plan import Plan, plan_for
from ..reconcile.decide import Decision, Event, decide, with_failures
from ..reconcile.execute import NameTaken, Writer, Written, execute, write_status
from ..reconcile.multinode import lws_installed
from ..reconcile.read import (
    KINDS,
    MODEL_DEPLOYMENT,
    EventLister,
    Snapshot,
    Store,
    concerned,
    read,
)
from ..reconcile.status import condition, merge
from .metrics import CHILD_WRITES, ECHOES, RECONCILE_SECONDS, RECONCILES, STATUS_WRITES
from .queue import Priority, WorkQueue

log = logging.getLogger("modeldeploy")
Obj = dict[str, Any]
Key = tuple[str, str]
WriteKey = tuple[str, str, str]


class Client(Writer, EventLister):
    """What a reconcile needs of the API: writes, events, and the events of an unbound claim."""

    async def post_event(self, body: Obj, type: str, reason: str, message: str) -> None: ...


TERMINATING = "NamespaceTerminating"
CONFLICT = "Conflict"
# Write conflicts in a row that are retried quietly; more are reported as any failure is.
QUIET_CONFLICTS = 3


def quiet_failure(err: Exception) -> str | None:
    """A failure that is no problem of the ModelDeployment, so neither a condition nor a
    Warning: its namespace is being deleted (the API server refuses new objects there), or a
    write met a concurrent one (409 Conflict: the retry reads the newer object)."""
    if not isinstance(err, ApiError) or err.status is None:
        return None
    causes = (err.status.details.causes if err.status.details else None) or []
    if err.status.code == 403 and (any(c.reason == TERMINATING for c in causes) or
                                   "because it is being terminated" in
                                   (err.status.message or "")):
        return TERMINATING
    if err.status.code == 409 and err.status.reason == CONFLICT:
        return CONFLICT
    return None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operator:
    catalog: Catalog
    config: OperatorConfig
    kube: Any = None  # a Client, set at startup
    store: Store = field(default_factory=Store)
    plans: dict[Key, tuple[str, int | None, Plan | PlanError]] = field(default_factory=dict)
    # resourceVersion of each object's last write by this operator (None: deleted by it)
    own_writes: dict[WriteKey, str | None] = field(default_factory=dict)
    queue: WorkQueue | None = None
    # names each ModelDeployment would use that objects not its own hold (the watches do not
    # show those objects): (kind, name) -> why, until a check finds the name free
    taken: dict[Key, dict[tuple[str, str], str]] = field(default_factory=dict)
    lws_allowed: bool = True  # RBAC lets it manage LeaderWorkerSets (checked at start)
    _posting: set[asyncio.Task[None]] = field(default_factory=set)
    _conflicts: dict[Key, int] = field(default_factory=dict)  # write conflicts in a row

    # -- the watches --------------------------------------------------------------------
    def observe(self, kind: str, body: Obj) -> None:
        """An object as a watch (or the initial listing) delivered it."""
        stored = self.store.put(kind, body)
        if kind == MODEL_DEPLOYMENT:
            self._replan(stored)

    def observe_deleted(self, kind: str, body: Obj) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace") or "", meta["name"]
        self.store.remove(kind, namespace, name)
        if kind == MODEL_DEPLOYMENT:
            key = (namespace, name)
            self.plans.pop(key, None)
            self._conflicts.pop(key, None)
            self.taken.pop(key, None)
            self.store.claims.want(key, None)
            if self.queue is not None:
                self.queue.forget(key)

    def concerned(self, kind: str, body: Obj, event_type: str | None) -> list[tuple[Key,
                                                                                  Priority]]:
        """The ModelDeployments to reconcile after this event, and how urgently; none for
        the echo of the operator's own write or for a deleted ModelDeployment."""
        meta = body["metadata"]
        write_key = (kind, meta.get("namespace") or "", meta["name"])
        version = None if event_type == "DELETED" else meta.get("resourceVersion")
        if write_key in self.own_writes and self.own_writes.pop(write_key) == version:
            ECHOES.inc()
            return []
        if kind == MODEL_DEPLOYMENT:
            if event_type == "DELETED":
                return []  # the garbage collector removes what it alone owned
            settled = (body.get("status") or {}).get("observedGeneration") == \
                meta.get("generation")
            return [((write_key[1], write_key[2]), Priority.EVENT if settled else Priority.NEW)]
        return [(key, Priority.EVENT) for key in concerned(self.store, kind, body)]

    def _replan(self, body: Obj) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.plans.get(key)
        if known is not None and known[:2] == (meta.get("uid"), meta.get("generation")):
            return
        try:
            plan: Plan | PlanError = plan_for(body, self.catalog, self.config)
        except PlanError as err:
            plan = err
        self.plans[key] = (meta.get("uid"), meta.get("generation"), plan)
        self.store.claims.want(key, plan.cache.claim_name if isinstance(plan, Plan) else None)

    # -- one reconcile ------------------------------------------------------------------
    async def reconcile(self, key: Key) -> bool:
        """Reconcile one ModelDeployment; False asks the queue to retry it with backoff.
        Never raises: an error becomes a condition, an event and a log line."""
        body = self.store.get(MODEL_DEPLOYMENT, *key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return True
        started = time.monotonic()
        try:
            decision = await self._decide(key, body)
            try:
                ok = await self._execute(key, body, decision)
            except NameTaken as taken:
                # the name is someone else's: what this run created is gone again, and the
                # status says what is in the way (the decision made knowing it creates nothing)
                self._stored(taken.written)
                self.taken.setdefault(key, {})[(taken.kind, taken.name)] = taken.why
                decision = await self._decide(key, body)
                await self._execute(key, body, replace(decision, actions=[]))
                ok = False
        except Exception as err:  # every failure is reported, then retried
            RECONCILES.labels("error").inc()
            return await self._failed(key, body, err)
        finally:
            RECONCILE_SECONDS.observe(time.monotonic() - started)
        self._conflicts.pop(key, None)
        invalid = decision.status is not None and decision.status.get("phase") == \
            Phase.INVALID.value
        RECONCILES.labels("invalid" if invalid else "ok").inc()
        # a name conflict is checked again with backoff (the object in the way sends no event)
        return ok and not self.taken.get(key)

    async def _failed(self, key: Key, body: Obj, err: Exception) -> bool:
        """What a failed reconcile leaves: True when there is nothing to retry."""
        quiet = quiet_failure(err)
        if quiet == TERMINATING:
            log.debug("%s/%s: its namespace is being deleted", *key)
            return True  # the ModelDeployment goes with its namespace
        conflicts = self._conflicts.pop(key, 0) + 1 if quiet == CONFLICT else 0
        if 0 < conflicts <= QUIET_CONFLICTS:
            self._conflicts[key] = conflicts
            log.info("reconcile of %s/%s met a write conflict, retrying: %s", *key, err)
            return False
        await self._report_error(key, body, err)
        return False

    async def _decide(self, key: Key, body: Obj) -> Decision:
        self._replan(body)
        plan = self.plans[key][2]
        if isinstance(plan, PlanError):
            return decide(body, plan, Snapshot(), [], now())
        uid = body["metadata"]["uid"]
        snap = await read(self.store, self.kube, plan, uid)
        snap = replace(snap, taken=dict(self.taken.get(key) or {}))
        if plan.multi_node and not self.lws_allowed:
            snap = replace(snap, lws_installed=False, lws_forbidden=True)
        elif plan.multi_node:
            snap = replace(snap, lws_installed=await lws_installed(self.store, self.kube,
                                                                   plan.namespace))
        return decide(body, plan, snap, self._cache_users(plan), now())

    def _cache_users(self, plan: Plan) -> list[Owner]:
        users = []
        for key in self.store.claims.users(plan.namespace, plan.cache.claim_name):
            body = self.store.get(MODEL_DEPLOYMENT, *key)
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                users.append(Owner(key[1], body["metadata"]["uid"]))
        return users

    async def _execute(self, key: Key, body: Obj, decision: Decision) -> bool:
        """Carries out the decision; False: a write was refused (the status says which, when
        it is not a lost race), and the reconcile is retried with backoff."""
        try:
            done = await execute(self.kube, decision.actions)
        finally:
            CHILD_WRITES.inc(len(decision.actions))
        self._stored(done.written)
        taken = self.taken.get(key)
        if taken is not None and done.free:
            for name in done.free:
                taken.pop(name, None)
            if not taken:  # every name in the way is free again: create what is wanted now
                del self.taken[key]
                if self.queue is not None:
                    self.queue.add(key, Priority.EVENT)
        status, events = decision.status, decision.events
        refused = [(f.kind, f.name, f.message) for f in done.failures if not f.transient]
        if refused:
            status, more = with_failures(body, status, refused, now())
            events = [*events, *more]
        for failure in done.failures:
            log.warning("%s %s %s/%s: %s", "conflict writing" if failure.transient else
                        "refused write of", failure.kind, failure.namespace, failure.name,
                        failure.message)
        if status is not None:
            self._wrote_status(key, await write_status(self.kube, key[0], key[1], status))
            STATUS_WRITES.inc()
        for event in events:
            self._post_later(body, event)
            log.info("%s %s/%s: %s", event.reason, key[0], key[1], event.message)
        return not done.failures

    def _stored(self, written: list[Written]) -> None:
        for kind, namespace, name, obj in written:  # the store holds what was just written
            if kind not in KINDS:
                continue  # not watched: no echo to expect
            if obj is None:
                # a deletion's event is routed: what was deleted may have to come back (a
                # failed download's Job is deleted to start a new try)
                self.store.remove(kind, namespace, name)
            else:
                self.own_writes[(kind, namespace, name)] = obj["metadata"].get("resourceVersion")
                self.store.put(kind, obj, only_newer=True)

    def _post_later(self, body: Obj, event: Event) -> None:
        """Events go out beside the reconciles: a slot of the queue never waits for one."""
        task = asyncio.get_running_loop().create_task(self._post(body, event))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post(self, body: Obj, event: Event) -> None:
        try:
            await self.kube.post_event(body, event.type, event.reason, event.message)
        except Exception as err:  # an event is worth a try, never a failed reconcile
            log.warning("could not post event %s on %s: %s", event.reason,
                        body["metadata"]["name"], err)

    async def _report_error(self, key: Key, body: Obj, err: Exception) -> None:
        """A refused write (RBAC, admission, quota) or a lost connection becomes the Available
        condition and a Warning event; the queue retries with backoff."""
        if isinstance(err, ApiError):
            reason, message = Why.API_ERROR, \
                f"the Kubernetes API refused a change: {err.status.message}"
        else:
            reason, message = Why.RECONCILE_ERROR, \
                f"reconcile failed, retrying: {type(err).__name__}: {err}".rstrip(": ")
        log.error("reconcile of %s/%s failed: %s", key[0], key[1], message)
        old = ModelDeploymentStatus.model_validate(body.get("status") or {})
        if any(c.type == AVAILABLE and c.message == message for c in old.conditions):
            return  # already reported
        kept = [c for c in old.conditions if c.type != AVAILABLE]
        failed = condition(AVAILABLE, False, reason, message)
        merged = merge(old.conditions, [*kept, failed], body["metadata"].get("generation"), now())
        status = {"conditions": [c.model_dump(mode="json", exclude_none=True) for c in merged]}
        try:
            self._wrote_status(key, await write_status(self.kube, key[0], key[1], status))
        except Exception as second:  # the API may be what is down
            log.warning("could not report the error on %s/%s: %s", key[0], key[1], second)
            return
        self._post_later(body, Event("Warning", reason, message))

    def _wrote_status(self, key: Key, updated: Obj) -> None:
        self.own_writes[(MODEL_DEPLOYMENT, *key)] = updated["metadata"].get("resourceVersion")
        self.store.put(MODEL_DEPLOYMENT, updated, only_newer=True)
