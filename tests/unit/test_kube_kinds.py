"""Every kind the operator writes can be created, read back and updated by its client (a kind
missing from one table fails only on the first create of that kind)."""

from __future__ import annotations

from modeldeploy.runtime.kube import _RAW, KINDS

READ_ONLY = {"Pod", "Event"}  # watched or posted, never created by a reconcile


def test_every_written_kind_can_be_created_read_and_updated() -> None:
    written = set(KINDS) - READ_ONLY
    assert "LeaderWorkerSet" in written and "Deployment" in written
    assert written <= set(_RAW), sorted(written - set(_RAW))
