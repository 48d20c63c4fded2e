"""What the children say, turned into a phase and conditions; and conditions merged so their
transition times stay honest. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..api import (
    AVAILABLE,
    CACHE_READY,
    CONDITION_TYPES,
    DEGRADED,
    Condition,
    ConditionStatus,
    Phase,
    Why,
)
from ..api.reasons import PROGRESS_REASONS
from ..cache.status import CacheView, serving_condition, with_note
from ..labels import RETRY_ANNOTATION
from ..loader import (
    PROGRESS_ANNOTATION,
    Progress,
    parse_progress,
    progress_message,
    progress_status,
)
from ..plan import Plan
from .read import Snapshot

Obj = dict[str, Any]


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


@dataclass(frozen=True)
class Assessment:
    phase: Phase
    conditions: list[Condition]
    replicas: int = 0
    ready_replicas: int = 0
    download: Obj | None = None  # status.download: the loader's progress while it runs
    # the missing replicas are only starting: Degraded says so, but it is no Warning
    starting: bool = False

    @property
    def problem(self) -> Condition | None:
        """The condition that explains a failed or stuck state, for a Warning event."""
        if self.starting:
            return None
        for cond in self.conditions:
            bad = "True" if cond.type == DEGRADED else "False"
            if cond.status.value == bad and cond.reason not in PROGRESS_REASONS:
                return cond
        return None


def assess(observed: Snapshot, complete: bool, desired_replicas: int,
           plan: Plan | None = None, view: CacheView | None = None) -> Assessment:
    """``view`` (with the ``plan``): what the cache's lifecycle adds (cache/status.py)."""
    view = view or CacheView()
    if not complete:
        cache, phase = (view.lost, Phase.PENDING) if view.lost else _cache_condition(observed)
        progress = job_progress(observed.job)
        download = None if progress is None else progress_status(progress)
        cache = with_note(cache, view.note)
        if view.serving is not None and plan is not None and view.lost is None:
            # the previous weights serve until the new ones are complete
            serving = _serving(observed, desired_replicas,
                               serving_condition(cache, view.serving, plan))
            return replace(serving, download=download)
        waiting = condition(AVAILABLE, False, Why.WAITING_FOR_CACHE,
                            "the engine starts once the weights are in the cache")
        return Assessment(phase, [cache, waiting], download=download)
    cache = condition(CACHE_READY, True, Why.CACHE_COMPLETE, "the weights are in the cache")
    return _serving(observed, desired_replicas, with_note(cache, view.note))


def _cache_condition(observed: Snapshot) -> tuple[Condition, Phase]:
    claim_phase = (observed.claim or {}).get("status", {}).get("phase")
    if observed.claim is not None and claim_phase != "Bound":
        name = observed.claim["metadata"]["name"]
        warning = _latest_warning(observed.claim_events)
        if warning is None:
            return (condition(CACHE_READY, False, Why.BINDING,
                              f"waiting for cache claim {name} to be bound"), Phase.PENDING)
        return (condition(CACHE_READY, False, Why.CACHE_PENDING,
                          f"cache claim {name} is {claim_phase or 'Pending'}: {warning}"),
                Phase.PENDING)
    failed = _job_failure(observed.job)
    progress = job_progress(observed.job)
    if failed:
        said = progress.message if progress is not None and progress.state == "failed" else None
        detail = said or _pod_failure(observed.job_pods)
        name = (observed.job or {}).get("metadata", {}).get("name", "")
        return (condition(CACHE_READY, False, Why.DOWNLOAD_FAILED,
                          f"download failed: {failed}" + (f"; {detail}" if detail else "") +
                          f"; to retry, change the spec, or set the annotation "
                          f"{RETRY_ANNOTATION} to the time now (kubectl annotate --overwrite "
                          f"md NAME {RETRY_ANNOTATION}=$(date -u +%Y-%m-%dT%H:%M:%SZ)), or "
                          f"delete Job {name}"),
                Phase.FAILED)
    for pod in observed.job_pods:
        waiting = _waiting(pod)
        if waiting and waiting[0] == "CreateContainerConfigError":
            return (condition(CACHE_READY, False, Why.SECRET_MISSING,
                              f"the download cannot start: {waiting[1]}"), Phase.PENDING)
    message = "downloading the weights" if progress is None else progress_message(progress)
    return condition(CACHE_READY, False, Why.DOWNLOADING, message), Phase.DOWNLOADING


def job_progress(job: Obj | None) -> Progress | None:
    """The loader's last progress record, from its Job's annotation."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return parse_progress(annotations.get(PROGRESS_ANNOTATION))


def _serving(observed: Snapshot, desired: int, cache: Condition) -> Assessment:
    status = (observed.deployment or {}).get("status", {})
    ready = int(status.get("readyReplicas") or 0)
    if desired == 0:
        available = condition(AVAILABLE, False, Why.SCALED_TO_ZERO,
                              "replicas is 0: no replica serves (set spec.replicas to serve)")
        return Assessment(Phase.SCALED_TO_ZERO, [cache, available], 0, 0)
    counted = f"{ready} of {desired} replicas ready"
    if ready >= desired:
        degraded = condition(DEGRADED, False, Why.ALL_REPLICAS_READY, counted)
        available = condition(AVAILABLE, True, Why.READY, counted)
        return Assessment(Phase.READY, [cache, available, degraded], desired, ready)
    reason, message, phase = _not_ready(observed.deployment, observed.pods)
    # what keeps the missing replicas back, when the pods say more than "starting"
    why = "" if reason == Why.STARTING else f"; {message}"
    degraded = condition(DEGRADED, True, Why.REPLICAS_UNAVAILABLE, counted + why)
    # the missing replicas' pods are only loading the model (or are being created)
    starting = reason == Why.STARTING
    if ready > 0:
        available = condition(AVAILABLE, True, Why.READY, counted)
        return Assessment(Phase.READY, [cache, available, degraded], desired, ready,
                          starting=starting)
    available = condition(AVAILABLE, False, reason, message)
    return Assessment(phase, [cache, available, degraded], desired, ready, starting=starting)


def _replica_failure(deployment: Obj | None) -> tuple[str, str, Phase] | None:
    """Pods the ReplicaSet cannot create (a ResourceQuota, an admission webhook, a pod
    security rule): the Deployment's ReplicaFailure condition carries the API server's
    refusal."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            said = str(cond.get("message") or cond.get("reason") or "").strip()
            if "exceeded quota" in said:
                return (Why.QUOTA_EXCEEDED, f"a ResourceQuota refuses the engine's pods: {said}",
                        Phase.PENDING)
            return Why.FAILED_CREATE, f"the engine's pods cannot be created: {said}", \
                Phase.FAILED
    return None


# Container states that keep the engine from starting, and what to look at.
_CONTAINER_PROBLEMS = {
    Why.ERR_IMAGE_PULL: "the engine image cannot be pulled (check spec.image, the registry "
                        "and imagePullSecrets)",
    Why.IMAGE_PULL_BACK_OFF: "the engine image cannot be pulled (check spec.image, the "
                             "registry and imagePullSecrets)",
    Why.INVALID_IMAGE_NAME: "the engine image name is invalid (check spec.image)",
    Why.CONTAINER_CONFIG_ERROR: "the engine container cannot be configured (check the "
                                "Secrets and ConfigMaps spec.env refers to)",
    Why.CONTAINER_CREATE_ERROR: "the engine container cannot be created",
}


def _not_ready(deployment: Obj | None, pods: list[Obj]) -> tuple[str, str, Phase]:
    failure = _replica_failure(deployment)
    if failure is not None:
        return failure
    for pod in pods:
        unschedulable = _unschedulable(pod)
        if unschedulable:
            return Why.UNSCHEDULABLE, f"no node fits: {unschedulable}", Phase.PENDING
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                return (Why.OOM_KILLED, "the engine was killed for using too much memory "
                        "(OOMKilled): raise resources.limits.memory, or give it more GPUs "
                        "(gpu.count) or a shorter maxModelLen", Phase.FAILED)
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason == "CrashLoopBackOff":
                return (Why.CRASH_LOOP, f"the engine keeps crashing (restarted "
                        f"{cs.get('restartCount', 0)} times): {waiting.get('message', '')}"
                        .rstrip(": "), Phase.FAILED)
            if reason in _CONTAINER_PROBLEMS:
                said = str(waiting.get("message") or "").strip()
                return (reason, f"{_CONTAINER_PROBLEMS[reason]}: {reason}: {said}".rstrip(": "),
                        Phase.FAILED)
    return Why.STARTING, "the engine is loading the model", Phase.STARTING


def _unschedulable(pod: Obj) -> str | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            return str(cond.get("message", "")).strip()
    return None


def _waiting(pod: Obj) -> tuple[str, str] | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return waiting["reason"], waiting.get("message", "")
    return None


def _job_failure(job: Obj | None) -> str | None:
    for cond in (job or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
    return None


def _pod_failure(pods: list[Obj]) -> str | None:
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode"):
                said = str(term.get("message") or "").strip().splitlines()
                return said[-1] if said else \
                    f"the downloader exited with code {term['exitCode']}"
    return None


def _latest_warning(events: list[Obj]) -> str | None:
    warnings = [e for e in events if e.get("type") == "Warning"]
    if not warnings:
        return None
    latest = max(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return str(latest.get("message", "")).strip()
