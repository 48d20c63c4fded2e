"""decide(), by scenario: the actions, status and events for each state the e2e suite drives
the operator through (pure: dict fixtures, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.actions import Action, Apply, Check, Delete, Replace
from modeldeploy.api import ModelDeploymentSpec, PlanError, Reason
from modeldeploy.cache.decide import wanted_claim
from modeldeploy.cache.objects import download_job
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.labels import (
    CACHE_COMPLETE_ANNOTATION,
    RETAIN_ANNOTATION,
)
from modeldeploy.objects import Owner, Owners
from modeldeploy.plan import Plan, make_plan
from modeldeploy.reconcile.decide import Decision, decide
from modeldeploy.reconcile.ownership import with_template_hash
from modeldeploy.reconcile.read import Snapshot
from modeldeploy.render.service import service
from modeldeploy.render.serving import deployment

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
ME = Owner("md", "uid-md")


@pytest.fixture
def plan(catalog: Catalog, config: OperatorConfig) -> Plan:
    spec = ModelDeploymentSpec.model_validate({"model": "deepseek-v2-chat",
                                               "sizeInBillions": 16})
    return make_plan("md", "llm", spec, catalog, config)


def body(status: Obj | None = None, generation: int = 1) -> Obj:
    obj: Obj = {"metadata": {"name": "md", "namespace": "llm", "uid": "uid-md",
                             "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def verb(action: Action) -> str:
    if isinstance(action, Apply):
        return "create" if action.create else "apply"
    return {Delete: "delete", Replace: "replace", Check: "check"}[type(action)]


def kinds(actions: list[Action]) -> list[str]:
    return [f"{verb(a)} {a.key[0]}" for a in actions]


def live(obj: Obj, **status: Any) -> Obj:
    """An object as the API server returns it: what we applied, plus server fields."""
    got = copy.deepcopy(obj)
    got["metadata"] |= {"uid": "x", "resourceVersion": "1"}
    if status:
        got["status"] = status
    return got


def bound_claim(plan: Plan, complete: bool, users: list[Owner] | None = None) -> Obj:
    owners = Owners.of(ME, users or [ME])
    return live(wanted_claim(plan, owners, complete, None), phase="Bound")


def job(plan: Plan, **status: Any) -> Obj:
    """The download Job as it was rendered for this plan, with its status."""
    got = live(download_job(plan, Owners.of(ME, [ME]).cache))
    got["status"] = status
    return got


def serving(plan: Plan, ready: int = 1) -> tuple[Obj, Obj]:
    owner = Owners.of(ME, [ME]).controller
    return (live(with_template_hash(deployment(plan, owner)), readyReplicas=ready),
            live(service(plan, owner)))


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    assert decision.status is not None
    return {c["type"]: (c["status"], c["reason"]) for c in decision.status["conditions"]}


def test_first_apply_creates_the_cache_its_job_and_the_service_but_no_deployment(
        plan: Plan) -> None:
    decision = decide(body(), plan, Snapshot(), [ME], NOW)
    assert kinds(decision.actions) == [
        "check Deployment", "create PersistentVolumeClaim", "create ServiceAccount",
        "create Role", "create RoleBinding", "create Job", "create Service"]
    # the claim is being created: the first thing to wait for is its volume
    assert decision.status is not None and decision.status["phase"] == "Pending"
    assert conditions(decision)["CacheReady"] == ("False", "WaitingForVolume")
    assert conditions(decision)["Available"] == ("False", "WaitingForCache")
    assert [e.message for e in decision.events] == ["New -> Pending"]
    bound = Snapshot(claim=bound_claim(plan, complete=False), job=job(plan, active=1))
    downloading = decide(body(decision.status), plan, bound, [ME], NOW)
    assert downloading.status is not None and downloading.status["phase"] == "Downloading"
    assert [e.message for e in downloading.events] == ["Pending -> Downloading"]


def test_a_finished_job_marks_the_claim_removes_the_job_and_starts_the_engine(
        plan: Plan) -> None:
    snap = Snapshot(claim=bound_claim(plan, complete=False),
                    job=job(plan, conditions=[{"type": "Complete", "status": "True"}]))
    decision = decide(body(), plan, snap, [ME], NOW)
    assert kinds(decision.actions) == [
        "apply PersistentVolumeClaim", "create Deployment", "create Service", "delete Job",
        "delete RoleBinding", "delete Role", "delete ServiceAccount"]
    marked = decision.actions[0]
    assert isinstance(marked, Apply)
    assert marked.obj["metadata"]["annotations"][CACHE_COMPLETE_ANNOTATION].startswith(
        "huggingface/deepseek-ai/DeepSeek-V2-Lite-Chat@")
    assert decision.status is not None and decision.status["phase"] == "Starting"


def test_a_complete_cache_starts_at_once_without_a_job(plan: Plan) -> None:
    decision = decide(body(), plan, Snapshot(claim=bound_claim(plan, complete=True)), [ME],
                      NOW)
    assert kinds(decision.actions) == ["create Deployment", "create Service"]


def test_everything_in_place_decides_nothing_and_a_second_run_writes_no_status(
        plan: Plan) -> None:
    deploy, svc = serving(plan)
    snap = Snapshot(claim=bound_claim(plan, complete=True), deployment=deploy, service=svc)
    first = decide(body(), plan, snap, [ME], NOW)
    assert first.actions == []
    assert first.status is not None and first.status["phase"] == "Ready"
    again = decide(body(first.status), plan, snap, [ME], "2026-01-02T00:00:00Z")
    assert again == Decision()


def test_drift_is_put_back(plan: Plan) -> None:
    deploy, svc = serving(plan)
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    del svc["spec"]["ports"]
    snap = Snapshot(claim=bound_claim(plan, complete=True), deployment=deploy, service=svc)
    assert kinds(decide(body(), plan, snap, [ME], NOW).actions) == [
        "replace Deployment", "replace Service"]


def test_a_shared_cache_is_owned_by_every_user(plan: Plan) -> None:
    other = Owner("other", "uid-other")
    snap = Snapshot(claim=bound_claim(plan, complete=True))
    decision = decide(body(), plan, snap, [ME, other], NOW)
    claim = next(a for a in decision.actions if a.key[0] == "PersistentVolumeClaim")
    assert isinstance(claim, Apply)
    assert [r["name"] for r in claim.obj["metadata"]["ownerReferences"]] == ["md", "other"]


def _old_claim(name: str, *owners: Owner, retained: bool = False) -> Obj:
    annotations = {RETAIN_ANNOTATION: "true"} if retained else {}
    return {"metadata": {"name": name, "namespace": "llm", "labels": {"a": "b"},
                         "annotations": annotations,
                         "ownerReferences": [{"name": o.name, "uid": o.uid,
                                              "kind": "ModelDeployment"} for o in owners]},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "34Gi"}}}}


@pytest.mark.parametrize(("owners", "retained", "expected"), [
    ([ME], False, ["delete PersistentVolumeClaim", "delete Job", "delete RoleBinding",
                   "delete Role", "delete ServiceAccount"]),
    ([ME, Owner("other", "uid-other")], False, ["apply PersistentVolumeClaim"]),
    ([ME], True, ["apply PersistentVolumeClaim"]),
    ([Owner("other", "uid-other")], False, []),  # not ours any more: the watch was behind
])
def test_a_revision_change_prunes_the_old_cache(plan: Plan, owners: list[Owner],
                                                 retained: bool, expected: list[str]) -> None:
    deploy, svc = serving(plan)
    old = _old_claim("weights-old", *owners, retained=retained)
    snap = Snapshot(claim=bound_claim(plan, complete=True), deployment=deploy, service=svc,
                    owned=[(old, job(plan))])
    actions = decide(body(), plan, snap, [ME], NOW).actions
    assert kinds(actions) == expected
    for action in actions:
        if isinstance(action, Apply):
            assert ME.uid not in {r["uid"] for r in action.obj["metadata"]["ownerReferences"]}
        if isinstance(action, Delete) and action.kind == "Job":
            assert action.name == "weights-old-dl"


def test_an_invalid_spec_creates_nothing_and_says_why(plan: Plan) -> None:
    error = PlanError(Reason.UNKNOWN_MODEL, "model 'x' is not in the catalog")
    decision = decide(body(), error, Snapshot(), [], NOW)
    assert decision.actions == []
    assert decision.status is not None and decision.status["phase"] == "Invalid"
    assert conditions(decision) == {"Resolved": ("False", "UnknownModel"),
                                    "Available": ("False", "InvalidSpec")}
    assert "resolved" not in decision.status


@pytest.mark.parametrize(("snap_of", "phase", "reason"), [
    (lambda p: Snapshot(claim=bound_claim(p, False),
                        job=job(p, conditions=[{"type": "Failed", "status": "True",
                                                "reason": "BackoffLimitExceeded"}])),
     "Failed", "DownloadFailed"),
    (lambda p: Snapshot(claim={**bound_claim(p, False), "status": {"phase": "Pending"}},
                        claim_events=[{"type": "Warning", "message": "no such class"}]),
     "Pending", "CachePending"),
])
def test_failures_are_a_phase_a_condition_and_one_warning(
        plan: Plan, snap_of: Any, phase: str, reason: str) -> None:
    decision = decide(body(), plan, snap_of(plan), [ME], NOW)
    assert decision.status is not None and decision.status["phase"] == phase
    assert conditions(decision)["CacheReady"] == ("False", reason)
    warnings = [e for e in decision.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == [reason]
    # reported once: the same state again raises no second warning
    again = decide(body(decision.status), plan, snap_of(plan), [ME], NOW)
    assert again.events == []


def test_unschedulable_replicas_say_the_schedulers_words(plan: Plan) -> None:
    deploy, svc = serving(plan, ready=0)
    pod = {"metadata": {"name": "p"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}}
    snap = Snapshot(claim=bound_claim(plan, True), deployment=deploy, service=svc, pods=[pod])
    decision = decide(body(), plan, snap, [ME], NOW)
    assert decision.actions == []
    assert conditions(decision)["Available"] == ("False", "Unschedulable")
    assert decision.status is not None and decision.status["phase"] == "Pending"


def test_an_autoscaled_deployment_is_created_at_min_and_its_replicas_handed_over(
        catalog: Catalog, config: OperatorConfig) -> None:
    spec = ModelDeploymentSpec.model_validate({
        "model": "deepseek-v2-chat", "sizeInBillions": 16,
        "autoscaling": {"minReplicas": 0, "maxReplicas": 2}})
    plan = make_plan("md", "llm", spec, catalog, config)
    snap = Snapshot(claim=bound_claim(plan, complete=True))
    created, handed = decide(body(), plan, snap, [ME], NOW).actions[:2]
    assert isinstance(created, Apply) and isinstance(handed, Apply)
    assert created.obj["spec"]["replicas"] == 0 and created.field_manager is None
    assert handed.obj["spec"] == {"replicas": 0}
    assert (handed.field_manager, handed.partial) == ("modeldeploy-autoscaler", True)
    # once the scaler co-owns the replicas, the operator's apply leaves them out
    deploy, svc = serving(plan, ready=0)
    deploy["spec"]["replicas"] = 0
    deploy["metadata"]["managedFields"] = [
        {"manager": "modeldeploy-autoscaler", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    settled = decide(body(), plan, Snapshot(claim=snap.claim, deployment=deploy, service=svc),
                     [ME], NOW)
    assert settled.actions == []
    assert settled.status is not None and settled.status["phase"] == "ScaledToZero"


def _progress(**record: Any) -> str:
    import json
    base = {"v": 1, "state": "downloading", "bytesDone": 163 * 2**30, "bytesTotal": 440 * 2**30,
            "filesDone": 10, "filesTotal": 30, "updated": NOW, "bytesPerSecond": 210 * 10**6,
            "etaSeconds": 23 * 60}
    return json.dumps({**base, **record})


def test_the_loaders_progress_is_in_the_status_and_the_condition(plan: Plan) -> None:
    running = job(plan, active=1)
    running["metadata"]["annotations"] = {"modeldeploy.dev/download-progress": _progress()}
    snap = Snapshot(claim=bound_claim(plan, complete=False), job=running)
    decision = decide(body(), plan, snap, [ME], NOW)
    assert decision.status is not None
    assert decision.status["download"]["percent"] == 37
    assert decision.status["download"]["filesTotal"] == 30
    cache = next(c for c in decision.status["conditions"] if c["type"] == "CacheReady")
    assert cache["message"] == "Downloading 37% (163 of 440 GiB, 210 MB/s, about 23 min left)"
    # once complete, the download figures leave the status
    done = decide(body(decision.status), plan,
                  Snapshot(claim=bound_claim(plan, complete=True)), [ME], NOW)
    assert done.status is not None and "download" not in done.status


def test_a_failed_download_says_the_loaders_words_and_how_to_retry(plan: Plan) -> None:
    failed = job(plan, conditions=[{"type": "Failed", "status": "True",
                                    "reason": "PodFailurePolicy"}])
    failed["metadata"]["annotations"] = {"modeldeploy.dev/download-progress": _progress(
        state="failed", message="revision 'x' does not exist in deepseek-ai/DeepSeek-V2")}
    snap = Snapshot(claim=bound_claim(plan, complete=False), job=failed)
    downloading = {"phase": "Downloading", "observedGeneration": 1}
    decision = decide(body(downloading), plan, snap, [ME], NOW)
    assert decision.status is not None and decision.status["phase"] == "Failed"
    cache = next(c for c in decision.status["conditions"] if c["type"] == "CacheReady")
    assert "revision 'x' does not exist" in cache["message"]
    assert "to retry, change the spec, or set the annotation modeldeploy.dev/retry-download" \
        in cache["message"] and "or delete Job" in cache["message"]
    assert not [a for a in decision.actions if isinstance(a, Delete)]
    # a spec changed since the failure was shown: the failed Job goes, a new try follows
    shown = decision.status
    retry = decide(body(shown, generation=2), plan, snap, [ME], NOW)
    assert [a.key[0] for a in retry.actions if isinstance(a, Delete)] == [
        "Job", "RoleBinding", "Role", "ServiceAccount"]
    assert kinds(decide(body(retry.status, generation=2), plan,
                        Snapshot(claim=snap.claim), [ME], NOW).actions)[-2:] == [
        "create Job", "create Service"]


def _waiting(reason: str, message: str) -> Obj:
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": reason, "message": message}}, "restartCount": 3}]}}


@pytest.mark.parametrize(("where", "pod", "phase", "kind", "reason"), [
    ("job", _waiting("CreateContainerConfigError", 'secret "hf" not found'), "Pending",
     "CacheReady", "SecretMissing"),
    ("engine", _waiting("CrashLoopBackOff", "back-off 40s"), "Failed", "Available",
     "CrashLoopBackOff"),
    ("engine", {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"state": {"running": {}}, "lastState": {"terminated": {"reason": "OOMKilled"}}}]}},
     "Failed", "Available", "OOMKilled"),
])
def test_every_pod_failure_reason(plan: Plan, where: str, pod: Obj, phase: str, kind: str,
                                  reason: str) -> None:
    if where == "job":
        snap = Snapshot(claim=bound_claim(plan, False), job=job(plan, active=1), job_pods=[pod])
    else:
        deploy, svc = serving(plan, ready=0)
        snap = Snapshot(claim=bound_claim(plan, True), deployment=deploy, service=svc,
                        pods=[pod])
    decision = decide(body(), plan, snap, [ME], NOW)
    assert decision.status is not None and decision.status["phase"] == phase
    assert conditions(decision)[kind] == ("False", reason)
    assert [e.reason for e in decision.events if e.type == "Warning"] == [reason]


def test_the_client_knows_every_kind_decide_writes(catalog: Catalog,
                                                    config: OperatorConfig) -> None:
    """execute() hands each action to the API client by kind: it must know them all."""
    from modeldeploy.render import render
    from modeldeploy.runtime.kube import KINDS

    spec = ModelDeploymentSpec.model_validate({"model": "deepseek-v2-chat",
                                               "sizeInBillions": 16})
    kinds = {o["kind"] for o in render(make_plan("md", "llm", spec, catalog, config))}
    assert kinds <= set(KINDS)
