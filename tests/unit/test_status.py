"""Status decisions from the snapshot of the children, by table (pure: no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.actions import matches
from modeldeploy.api import Phase
from modeldeploy.reconcile.read import Snapshot
from modeldeploy.reconcile.status import assess

Obj = dict[str, Any]
CLAIM_BOUND = {"metadata": {"name": "c"}, "status": {"phase": "Bound"}}
CLAIM_PENDING = {"metadata": {"name": "c"}, "status": {"phase": "Pending"}}
NO_CLASS = {"type": "Warning", "reason": "ProvisioningFailed",
            "message": 'storageclass.storage.k8s.io "x" not found'}
JOB_FAILED = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                         "reason": "BackoffLimitExceeded",
                                         "message": "Job has reached the backoff limit"}]}}


def pod(**status: Any) -> Obj:
    return {"status": status}


def container(state: Obj | None = None, last: Obj | None = None, restarts: int = 0) -> Obj:
    return {"state": state or {}, "lastState": last or {}, "restartCount": restarts}


UNSCHEDULABLE = pod(conditions=[{"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable",
                                 "message": "0/4 nodes are available: 4 Insufficient "
                                            "nvidia.com/gpu."}])
CRASHING = pod(containerStatuses=[container({"waiting": {"reason": "CrashLoopBackOff",
                                                         "message": "back-off 40s"}},
                                            restarts=3)])
OOM = pod(containerStatuses=[container({"running": {}},
                                       {"terminated": {"reason": "OOMKilled",
                                                       "exitCode": 137}})])
NO_SECRET = pod(containerStatuses=[container({"waiting": {
    "reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}})])


def deployment(ready: int, *conditions: Obj) -> Obj:
    return {"status": {"readyReplicas": ready, "conditions": list(conditions)}}


def replica_failure(message: str) -> Obj:
    return {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": message}


QUOTA = replica_failure('pods "x-1" is forbidden: exceeded quota: gpus, requested: '
                        'requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=0, '
                        'limited: requests.nvidia.com/gpu=0')
DENIED = replica_failure('admission webhook "policy.example.com" denied the request: no')


def waiting(reason: str, message: str) -> Obj:
    return pod(containerStatuses=[container({"waiting": {"reason": reason,
                                                         "message": message}})])


CASES = [
    # (cache complete, snapshot, desired replicas)
    #   -> (phase, {condition type: (status, reason, message part)})
    (False, Snapshot(claim=CLAIM_PENDING), 1, Phase.PENDING,
     {"CacheReady": ("False", "WaitingForVolume", "to be bound")}),
    (False, Snapshot(claim=CLAIM_PENDING, claim_events=[NO_CLASS]), 1, Phase.PENDING,
     {"CacheReady": ("False", "CachePending", '"x" not found')}),
    (False, Snapshot(claim=CLAIM_BOUND, job={"status": {"active": 1}}), 1, Phase.DOWNLOADING,
     {"CacheReady": ("False", "Downloading", "downloading"),
      "Available": ("False", "WaitingForCache", "")}),
    (False, Snapshot(claim=CLAIM_BOUND, job=JOB_FAILED, job_pods=[
        pod(containerStatuses=[container({"terminated": {"exitCode": 1}})])]), 1,
     Phase.FAILED, {"CacheReady": ("False", "DownloadFailed", "exited with code 1")}),
    (False, Snapshot(claim=CLAIM_BOUND, job={}, job_pods=[NO_SECRET]), 1, Phase.PENDING,
     {"CacheReady": ("False", "SecretMissing", 'secret "hf" not found')}),
    (True, Snapshot(claim=CLAIM_BOUND), 1, Phase.STARTING,
     {"CacheReady": ("True", "CacheComplete", ""), "Available": ("False", "Starting", "")}),
    (True, Snapshot(deployment=deployment(0), pods=[UNSCHEDULABLE]), 1, Phase.PENDING,
     {"Available": ("False", "Unschedulable", "Insufficient nvidia.com/gpu")}),
    (True, Snapshot(deployment=deployment(0), pods=[CRASHING]), 1, Phase.FAILED,
     {"Available": ("False", "CrashLoopBackOff", "restarted 3 times")}),
    (True, Snapshot(deployment=deployment(0), pods=[OOM]), 1, Phase.FAILED,
     {"Available": ("False", "OOMKilled", "resources.limits.memory")}),
    (True, Snapshot(deployment=deployment(2)), 2, Phase.READY,
     {"Available": ("True", "Ready", "2 of 2"), "Degraded": ("False", "AllReplicasReady", "")}),
    (True, Snapshot(deployment=deployment(1), pods=[UNSCHEDULABLE]), 2, Phase.READY,
     {"Available": ("True", "Ready", "1 of 2"),
      "Degraded": ("True", "ReplicasUnavailable",
                   "1 of 2 replicas ready; no node fits: 0/4 nodes are available")}),
    (True, Snapshot(deployment=deployment(1), pods=[CRASHING]), 2, Phase.READY,
     {"Degraded": ("True", "ReplicasUnavailable", "; the engine keeps crashing")}),
    (True, Snapshot(deployment=deployment(2), pods=[CRASHING]), 2, Phase.READY,
     {"Degraded": ("False", "AllReplicasReady", "2 of 2 replicas ready")}),
    (True, Snapshot(deployment=deployment(1), pods=[pod()]), 2, Phase.READY,
     {"Degraded": ("True", "ReplicasUnavailable", "1 of 2 replicas ready")}),
    (True, Snapshot(deployment=deployment(0)), 0, Phase.SCALED_TO_ZERO,
     {"Available": ("False", "ScaledToZero", "spec.replicas")}),
    (True, Snapshot(deployment=deployment(0, QUOTA), pods=[]), 1, Phase.PENDING,
     {"Available": ("False", "QuotaExceeded", "limited: requests.nvidia.com/gpu=0"),
      "Degraded": ("True", "ReplicasUnavailable", "exceeded quota")}),
    (True, Snapshot(deployment=deployment(0, DENIED)), 1, Phase.FAILED,
     {"Available": ("False", "FailedCreate", 'webhook "policy.example.com" denied')}),
    (True, Snapshot(deployment=deployment(1, QUOTA)), 2, Phase.READY,
     {"Available": ("True", "Ready", "1 of 2"),
      "Degraded": ("True", "ReplicasUnavailable", "a ResourceQuota refuses")}),
    (True, Snapshot(deployment=deployment(0), pods=[
        waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"')]), 1, Phase.FAILED,
     {"Available": ("False", "ImagePullBackOff", 'Back-off pulling image "nope:1"')}),
    (True, Snapshot(deployment=deployment(0), pods=[
        waiting("ErrImagePull", "manifest unknown")]), 1, Phase.FAILED,
     {"Available": ("False", "ErrImagePull", "cannot be pulled")}),
    (True, Snapshot(deployment=deployment(0), pods=[
        waiting("CreateContainerConfigError", 'secret "api" not found')]), 1, Phase.FAILED,
     {"Available": ("False", "CreateContainerConfigError", 'secret "api" not found')}),
    (True, Snapshot(deployment=deployment(0), pods=[
        waiting("ContainerCreating", "")]), 1, Phase.STARTING,
     {"Available": ("False", "Starting", "loading")}),
]


@pytest.mark.parametrize(("complete", "observed", "replicas", "phase", "expected"), CASES)
def test_assess(complete: bool, observed: Snapshot, replicas: int, phase: Phase,
                expected: dict[str, tuple[str, str, str]]) -> None:
    result = assess(observed, complete, replicas)
    assert result.phase is phase
    found = {c.type: c for c in result.conditions}
    for kind, (status, reason, part) in expected.items():
        assert (found[kind].status.value, found[kind].reason) == (status, reason)
        assert part in found[kind].message


def test_problem_is_what_deserves_a_warning() -> None:
    ok = assess(Snapshot(deployment=deployment(1)), True, 1)
    assert ok.problem is None
    degraded = assess(Snapshot(deployment=deployment(1, QUOTA)), True, 2)
    assert degraded.problem is not None and degraded.problem.reason == "ReplicasUnavailable"
    refused = assess(Snapshot(deployment=deployment(0, QUOTA)), True, 1)
    assert refused.problem is not None and refused.problem.reason == "QuotaExceeded"
    pulling = assess(Snapshot(deployment=deployment(0),
                              pods=[waiting("ErrImagePull", "not found")]), True, 1)
    assert pulling.problem is not None and pulling.problem.reason == "ErrImagePull"
    starting = assess(Snapshot(deployment=deployment(0), pods=[pod()]), True, 1)
    assert starting.problem is None
    downloading = assess(Snapshot(claim=CLAIM_BOUND, job={}), False, 1)
    assert downloading.problem is None


@pytest.mark.parametrize(("desired", "live", "same"), [
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": 1}, {"a": 2}, False),
    ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "x", "d": 0}]}}, True),
    ({"a": [1, 2]}, {"a": [1]}, False),
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": {}}, {}, False),
])
def test_matches(desired: Obj, live: Obj, same: bool) -> None:
    assert matches(desired, live) is same


def test_all_ready_says_only_the_count() -> None:
    """A stray crashing pod (an old ReplicaSet's) does not colour a fully ready Deployment."""
    result = assess(Snapshot(deployment=deployment(2), pods=[CRASHING]), True, 2)
    degraded = next(c for c in result.conditions if c.type == "Degraded")
    assert degraded.message == "2 of 2 replicas ready"


def test_a_normal_start_is_no_warning() -> None:
    """Replicas that are only loading the model: Degraded counts them, no Warning event."""
    starting = assess(Snapshot(deployment=deployment(0), pods=[pod()]), True, 1)
    assert starting.phase is Phase.STARTING and starting.problem is None
    half = assess(Snapshot(deployment=deployment(1), pods=[pod()]), True, 2)
    assert half.problem is None
    stuck = assess(Snapshot(deployment=deployment(1), pods=[UNSCHEDULABLE]), True, 2)
    assert stuck.problem is not None and stuck.problem.reason == "ReplicasUnavailable"


@pytest.mark.parametrize(("desired", "live", "same"), [
    # the API server stores quantities in canonical form
    ({"resources": {"limits": {"memory": "1.5Gi"}}},
     {"resources": {"limits": {"memory": "1536Mi"}}}, True),
    ({"resources": {"requests": {"cpu": "0.5"}}}, {"resources": {"requests": {"cpu": "500m"}}},
     True),
    ({"resources": {"requests": {"cpu": "4"}}}, {"resources": {"requests": {"cpu": "4"}}}, True),
    ({"resources": {"requests": {"memory": "64e9"}}},
     {"resources": {"requests": {"memory": "64G"}}}, True),
    ({"resources": {"requests": {"cpu": "1"}}}, {"resources": {"requests": {"cpu": "2"}}},
     False),
    ({"resources": {"requests": {"cpu": "1"}}}, {"resources": {"requests": {}}}, False),
    # elsewhere strings are strings
    ({"labels": {"v": "1.0"}}, {"labels": {"v": "1"}}, False),
])
def test_quantities_match_by_value(desired: Obj, live: Obj, same: bool) -> None:
    assert matches(desired, live) is same
