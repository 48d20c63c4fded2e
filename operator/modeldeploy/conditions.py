"""Status conditions: types, reasons, and merging that keeps transition times honest."""

from __future__ import annotations

from datetime import UTC, datetime

from .api import Condition, ConditionStatus

RESOLVED = "Resolved"
CACHE_READY = "CacheReady"
AVAILABLE = "Available"
DEGRADED = "Degraded"
CONDITION_TYPES = (RESOLVED, CACHE_READY, AVAILABLE, DEGRADED)


class Why:
    """Reasons of the conditions the operator sets (planner reasons are in errors.Reason)."""

    RESOLVED = "Resolved"
    CACHE_COMPLETE = "CacheComplete"
    DOWNLOADING = "Downloading"
    DOWNLOAD_FAILED = "DownloadFailed"
    BINDING = "WaitingForVolume"
    CACHE_PENDING = "CachePending"
    SECRET_MISSING = "SecretMissing"
    WAITING_FOR_CACHE = "WaitingForCache"
    STARTING = "Starting"
    UNSCHEDULABLE = "Unschedulable"
    CRASH_LOOP = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    READY = "Ready"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    ALL_REPLICAS_READY = "AllReplicasReady"
    SCALED_TO_ZERO = "ScaledToZero"
    INVALID = "InvalidSpec"
    API_ERROR = "APIError"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = {True: ConditionStatus.TRUE, False: ConditionStatus.FALSE,
              None: ConditionStatus.UNKNOWN}[ok]
    return Condition(type=kind, status=status, reason=reason, message=message)


def merge(old: list[Condition], new: list[Condition], generation: int | None,
          timestamp: str) -> list[Condition]:
    """New conditions in a stable order; a condition keeps its transition time while its
    status stays the same."""
    previous = {c.type: c for c in old}
    merged = []
    for cond in sorted(new, key=lambda c: CONDITION_TYPES.index(c.type)):
        before = previous.get(cond.type)
        since = before.lastTransitionTime if before and before.status == cond.status else None
        merged.append(cond.model_copy(update={"lastTransitionTime": since or timestamp,
                                              "observedGeneration": generation}))
    return merged
