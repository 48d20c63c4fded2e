"""Execute: apply the decided actions with server-side apply (one field manager) and write the
status. Nothing else: no reads, no decisions."""

from __future__ import annotations

from typing import Any, Protocol

from ..actions import Action, Apply

Obj = dict[str, Any]
Written = tuple[str, str, str, Obj | None]  # kind, namespace, name, the object (None: deleted)


class Writer(Protocol):
    async def apply(self, obj: Obj, field_manager: str | None = None,
                    partial: bool = False) -> Obj: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj: ...


async def execute(kube: Writer, actions: list[Action]) -> list[Written]:
    """Applies the actions in order; returns each object as the API server holds it now."""
    written: list[Written] = []
    for action in actions:
        kind, namespace, name = action.key
        if isinstance(action, Apply):
            applied = await kube.apply(action.obj, action.field_manager, action.partial)
            written.append((kind, namespace, name, applied))
        else:
            await kube.delete(kind, namespace, name)
            written.append((kind, namespace, name, None))
    return written


async def write_status(kube: Writer, namespace: str, name: str, status: Obj) -> Obj:
    return await kube.patch_status(namespace, name, status)
