"""Execute: carry out the decided actions and write the status. Nothing else: no decisions
beyond the ownership test of an object found in the way (ownership.py says what is ours).

Creates are POSTs: a name taken by an object that is not ours ends the run with
:class:`NameTaken`, after deleting what this run created (nothing is left half-made). Applies
are server-side applies (one field manager); replaces read the object and update it. A refused
write of one child does not stop the others: it is returned as a :class:`Failure` (deletions
after a failure wait for the next run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lightkube import ApiError

from ..actions import Action, Apply, Check, Delete, Replace
from .ownership import foreign_reason, replaced

Obj = dict[str, Any]
Written = tuple[str, str, str, Obj | None]  # kind, namespace, name, the object (None: deleted)


class Writer(Protocol):
    async def apply(self, obj: Obj, field_manager: str | None = None,
                    partial: bool = False) -> Obj: ...

    async def create(self, obj: Obj) -> Obj: ...

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def replace(self, obj: Obj) -> Obj: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj: ...


@dataclass(frozen=True)
class Failure:
    """A write the API server refused."""

    kind: str
    namespace: str
    name: str
    message: str
    # a write that lost a race (409 Conflict: the object changed since it was read): retried,
    # not reported
    transient: bool = False


@dataclass
class Executed:
    written: list[Written] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # names checked and found free (or ours), by (kind, name)
    free: list[tuple[str, str]] = field(default_factory=list)


class NameTaken(Exception):
    """A name this ModelDeployment would use is held by an object that is not its own."""

    def __init__(self, kind: str, name: str, why: str, written: list[Written]) -> None:
        super().__init__(f"{kind} {name}: {why}")
        self.kind, self.name, self.why, self.written = kind, name, why, written


def _already_exists(err: ApiError) -> bool:
    return err.status.code == 409 and err.status.reason == "AlreadyExists"


async def execute(kube: Writer, actions: list[Action]) -> Executed:
    """Carries out the actions in order; returns each object as the API server holds it now,
    the refused writes and the names found free."""
    done = Executed()
    created: list[tuple[str, str, str]] = []
    for action in actions:
        kind, namespace, name = action.key
        try:
            if isinstance(action, Check):
                await _check(kube, action.obj)
                done.free.append((kind, name))
            elif isinstance(action, Delete):
                if done.failures:
                    continue  # cleanup waits until every write went through
                await kube.delete(kind, namespace, name)
                done.written.append((kind, namespace, name, None))
            elif isinstance(action, Replace):
                live = await kube.get(kind, namespace, name)
                if live is None:
                    continue  # gone since it was seen: its deletion's event comes
                done.written.append((kind, namespace, name, await kube.replace(
                    replaced(live, action.obj, action.owned))))
            elif action.create:
                obj, new = await _create(kube, action)
                if new:
                    created.append(action.key)
                done.written.append((kind, namespace, name, obj))
            else:
                done.written.append((kind, namespace, name, await kube.apply(
                    action.obj, action.field_manager, action.partial)))
        except NameTaken as taken:
            for kind_, namespace_, name_ in reversed(created):
                await kube.delete(kind_, namespace_, name_)
                done.written.append((kind_, namespace_, name_, None))
            taken.written = done.written
            raise
        except ApiError as err:
            done.failures.append(Failure(kind, namespace, name, str(err.status.message or err),
                                         transient=err.status.code == 409))
    return done


async def _check(kube: Writer, desired: Obj) -> None:
    meta = desired["metadata"]
    live = await kube.get(desired["kind"], meta["namespace"], meta["name"])
    why = None if live is None else foreign_reason(desired, live)
    if why is not None:
        raise NameTaken(desired["kind"], meta["name"], why, [])


async def _create(kube: Writer, action: Apply) -> tuple[Obj, bool]:
    """The object created (True); or, where the name is taken by an object of ours the
    watches had not shown yet, that object applied (False)."""
    try:
        return await kube.create(action.obj), True
    except ApiError as err:
        if not _already_exists(err):
            raise
    await _check(kube, action.obj)
    return await kube.apply(action.obj, action.field_manager, action.partial), False


async def write_status(kube: Writer, namespace: str, name: str, status: Obj) -> Obj:
    return await kube.patch_status(namespace, name, status)
