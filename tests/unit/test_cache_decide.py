"""The weight cache's lifecycle, by table: owners that follow the users (on a running Job
too), a Job from another template replaced, a deleted claim under the engine, the old claim
kept under the serving Deployment after a revision change, and a shared claim made with other
settings. Pure: dict fixtures, no cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.actions import Action, Apply
from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.cache.decide import (
    cache_actions,
    cleanup_actions,
    is_complete,
    job_actions,
    lost_deployment_actions,
    prune_actions,
    retry_after_failure,
    wanted_claim,
)
from modeldeploy.cache.objects import download_job
from modeldeploy.cache.status import claim_differs
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.objects import Owner, Owners
from modeldeploy.plan import Plan, make_plan
from modeldeploy.reconcile.decide import decide
from modeldeploy.reconcile.read import Snapshot
from modeldeploy.render.service import service
from modeldeploy.render.serving import deployment

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
ME = Owner("md", "uid-md")
OTHER = Owner("other", "uid-other")
GONE = "2026-01-01T00:00:00Z"  # a deletionTimestamp


def make(catalog: Catalog, config: OperatorConfig, **spec: Any) -> Plan:
    return make_plan("md", "llm", ModelDeploymentSpec.model_validate(
        {"model": "deepseek-v2-chat", "sizeInBillions": 16, **spec}), catalog, config)


@pytest.fixture
def plan(catalog: Catalog, config: OperatorConfig) -> Plan:
    return make(catalog, config)


def live(obj: Obj, deleting: bool = False, **status: Any) -> Obj:
    got = copy.deepcopy(obj)
    got["metadata"] |= {"uid": "x", "resourceVersion": "1"}
    if deleting:
        got["metadata"]["deletionTimestamp"] = GONE
    if status:
        got["status"] = status
    return got


def kinds(actions: list[Action]) -> list[str]:
    return [f"{'apply' if isinstance(a, Apply) else 'delete'} {a.key[0]}" for a in actions]


def claim(plan: Plan, complete: bool = True, users: tuple[Owner, ...] = (ME,),
          deleting: bool = False) -> Obj:
    return live(wanted_claim(plan, Owners.of(ME, list(users)), complete, None), deleting,
                phase="Bound")


def job(plan: Plan, users: tuple[Owner, ...] = (ME,), deleting: bool = False,
        **status: Any) -> Obj:
    return live(download_job(plan, Owners.of(ME, list(users)).cache), deleting,
                **(status or {"active": 1}))


def serving(plan: Plan, **status: Any) -> Obj:
    return live(deployment(plan, Owners.of(ME, [ME]).controller),
                **(status or {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}))


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
IDENTITY_AND_JOB = ["apply ServiceAccount", "apply Role", "apply RoleBinding", "apply Job"]


@pytest.mark.parametrize(("users", "live_users", "loader", "status", "deleting", "expected"), [
    # no Job yet: its identity, then the Job
    ((ME,), None, None, {}, False, IDENTITY_AND_JOB),
    # the running Job already has every user as owner: nothing to do
    ((ME, OTHER), (ME, OTHER), None, {}, False, []),
    # a second user came: the running Job (and its identity) get it as owner, in place
    ((ME, OTHER), (ME,), None, {}, False, IDENTITY_AND_JOB),
    # a user went: it is dropped as owner
    ((ME,), (ME, OTHER), None, {}, False, IDENTITY_AND_JOB),
    # a running Job rendered under another operator config is replaced (templates are
    # immutable): deleted now, created again by the next reconcile
    ((ME,), (ME,), "ghcr.io/modeldeploy/loader:0.2.0", {}, False, ["delete Job"]),
    # ... a finished one is left alone
    ((ME,), (ME,), "ghcr.io/modeldeploy/loader:0.2.0", COMPLETE, False, []),
    ((ME,), (ME,), "ghcr.io/modeldeploy/loader:0.2.0", FAILED, False, []),
    # a Job being deleted is left to go
    ((ME, OTHER), (ME,), None, {}, True, []),
])
def test_the_download_job_follows_the_claims_users_and_the_operators_config(
        catalog: Catalog, plan: Plan, users: tuple[Owner, ...],
        live_users: tuple[Owner, ...] | None, loader: str | None, status: Obj,
        deleting: bool, expected: list[str]) -> None:
    found = None
    if live_users is not None:
        made_by = plan if loader is None else make(
            catalog, OperatorConfig(loaderImage=loader))
        found = job(made_by, live_users, deleting, **status)
    actions = job_actions(plan, Owners.of(ME, list(users)), found)
    assert kinds(actions) == expected
    for action in actions:
        if isinstance(action, Apply):
            refs = action.obj["metadata"]["ownerReferences"]
            assert sorted(r["uid"] for r in refs) == sorted(u.uid for u in users)
            assert not any(r["controller"] or r["blockOwnerDeletion"] for r in refs)
        if isinstance(action, Apply) and action.obj["kind"] == "Job":
            # the template is the one the live Job has: the apply changes only metadata
            assert found is None or action.obj["spec"] == download_job(
                plan, Owners.of(ME, [ME]).cache)["spec"]


def test_a_live_job_rendered_from_the_same_plan_matches(plan: Plan) -> None:
    assert job_actions(plan, Owners.of(ME, [ME]), job(plan)) == []


@pytest.mark.parametrize(("claim_state", "job_state", "complete", "expected"), [
    # a claim being deleted: nothing is written into it, its running Job goes (it holds it)
    ("deleting", "running", False, ["delete Job", "delete RoleBinding", "delete Role",
                                    "delete ServiceAccount"]),
    ("deleting", None, False, []),
    # a claim gone while a Job of it is left: the claim is made again, the Job goes
    (None, "complete", False, ["apply PersistentVolumeClaim", "delete Job"]),
    (None, None, False, ["apply PersistentVolumeClaim", *IDENTITY_AND_JOB]),
    ("bound", "running", False, []),
])
def test_a_deleted_claim_is_never_written_and_its_job_goes(
        plan: Plan, claim_state: str | None, job_state: str | None, complete: bool,
        expected: list[str]) -> None:
    live_claim = None if claim_state is None else claim(
        plan, complete=False, deleting=claim_state == "deleting")
    live_job = None if job_state is None else job(
        plan, **(COMPLETE if job_state == "complete" else {}))
    assert kinds(cache_actions(plan, Owners.of(ME, [ME]), complete, live_claim,
                               live_job)) == expected


@pytest.mark.parametrize(("claim_state", "job_status", "complete"), [
    ("complete", {}, True),
    ("incomplete", COMPLETE, True),
    ("incomplete", {}, False),
    ("deleting", COMPLETE, False),  # it says complete, but it is being deleted
    (None, COMPLETE, False),  # a finished Job of a claim that is gone
])
def test_what_counts_as_complete(plan: Plan, claim_state: str | None, job_status: Obj,
                                 complete: bool) -> None:
    live_claim = None if claim_state is None else claim(
        plan, complete=claim_state != "incomplete", deleting=claim_state == "deleting")
    assert is_complete(plan, live_claim, job(plan, **job_status)) is complete


@pytest.fixture
def revisions(catalog: Catalog, config: OperatorConfig) -> tuple[Plan, Plan]:
    """The same ModelDeployment before (revision aaaa) and after (bbbb) a revision change."""
    return make(catalog, config, revision="aaaa"), make(catalog, config, revision="bbbb")


@pytest.mark.parametrize(("on", "status", "expected"), [
    # the live Deployment still mounts the old claim: kept as it is
    ("old", None, []),
    # switched to the new claim, but the rollout is not done: old replicas may mount it
    ("new", {"replicas": 2, "updatedReplicas": 1}, []),
    ("new", {"replicas": 1, "updatedReplicas": 1, "observedGeneration": 1}, []),
    # switched and rolled out: pruned
    ("new", {"replicas": 1, "updatedReplicas": 1, "observedGeneration": 2},
     ["delete PersistentVolumeClaim"]),
    (None, None, ["delete PersistentVolumeClaim"]),  # no Deployment
])
def test_the_old_claim_stays_while_the_deployment_uses_it(
        revisions: tuple[Plan, Plan], on: str | None, status: Obj | None,
        expected: list[str]) -> None:
    old, new = revisions
    live_deployment = None
    if on is not None:
        live_deployment = serving(old if on == "old" else new, **(status or {}))
        live_deployment["metadata"]["generation"] = 2
        live_deployment["status"].setdefault("observedGeneration", 2)
    owned = [(claim(old), None)]
    assert kinds(prune_actions(ME, new.cache.claim_name, owned, live_deployment)) == expected


@pytest.mark.parametrize(("claim_state", "deployment_on", "old_claim", "expected"), [
    ("deleting", "new", None, ["delete Deployment"]),
    (None, "new", None, ["delete Deployment"]),
    ("bound", "new", None, []),
    # a revision change: the new claim does not exist yet, the Deployment serves the old one
    (None, "old", "bound", []),
    # ... and the old one is being deleted too: the Deployment goes
    (None, "old", "deleting", ["delete Deployment"]),
    (None, None, None, []),
])
def test_a_deployment_on_a_deleted_claim_goes(
        revisions: tuple[Plan, Plan], claim_state: str | None, deployment_on: str | None,
        old_claim: str | None, expected: list[str]) -> None:
    old, new = revisions
    live_claim = None if claim_state is None else claim(
        new, complete=False, deleting=claim_state == "deleting")
    live_deployment = None if deployment_on is None else serving(
        old if deployment_on == "old" else new)
    owned = [] if old_claim is None else [(claim(old, deleting=old_claim == "deleting"), None)]
    assert kinds(lost_deployment_actions(ME, new, live_claim, live_deployment, owned)) == \
        expected
    # a Deployment this ModelDeployment does not control is never deleted
    assert lost_deployment_actions(OTHER, new, live_claim, live_deployment, owned) == []


def conditions(status: Obj | None) -> dict[str, tuple[str, str, str]]:
    assert status is not None
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def body(status: Obj | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": "md", "namespace": "llm", "uid": ME.uid, "generation": 2}}
    if status is not None:
        obj["status"] = status
    return obj


def test_a_revision_change_keeps_serving_the_old_weights_while_the_new_download(
        revisions: tuple[Plan, Plan]) -> None:
    old, new = revisions
    old_claim = claim(old)
    svc = live(service(new, Owners.of(ME, [ME]).controller))
    snap = Snapshot(claim=claim(new, complete=False), job=job(new),
                    deployment=serving(old), service=svc, owned=[(old_claim, None)])
    decision = decide(body(), new, snap, [ME], NOW)
    assert decision.actions == []  # the old claim stays, the Deployment is not touched
    assert decision.status is not None and decision.status["phase"] == "Ready"
    found = conditions(decision.status)
    assert found["CacheReady"] == (
        "False", "Downloading",
        f"serving revision aaaa from cache {old.cache.claim_name} while revision bbbb "
        "downloads: downloading the weights")
    assert found["Available"][:2] == ("True", "Ready")
    assert not [e for e in decision.events if e.type == "Warning"]
    # a failed new download says so, and the old weights still serve
    failed = Snapshot(claim=claim(new, complete=False), job=job(new, **FAILED),
                      deployment=serving(old), service=svc, owned=[(old_claim, None)])
    decision = decide(body(), new, failed, [ME], NOW)
    assert decision.status is not None and decision.status["phase"] == "Ready"
    cache = conditions(decision.status)["CacheReady"]
    assert cache[1] == "DownloadFailed" and cache[2].startswith(
        f"serving revision aaaa from cache {old.cache.claim_name}; revision bbbb: download "
        "failed: BackoffLimitExceeded")


def test_a_deleted_claim_under_a_ready_deployment_stops_the_engine_and_says_so(
        plan: Plan) -> None:
    svc = live(service(plan, Owners.of(ME, [ME]).controller))
    ready = {"phase": "Ready", "observedGeneration": 2, "conditions": [
        {"type": "CacheReady", "status": "True", "reason": "CacheComplete", "message": "",
         "lastTransitionTime": NOW}]}
    snap = Snapshot(claim=claim(plan, deleting=True), deployment=serving(plan), service=svc)
    decision = decide(body(ready), plan, snap, [ME], NOW)
    assert kinds(decision.actions) == ["delete Deployment"]
    assert decision.status is not None and decision.status["phase"] == "Pending"
    found = conditions(decision.status)
    assert found["CacheReady"][:2] == ("False", "CacheDeleted")
    assert found["CacheReady"][2].startswith(
        f"cache claim {plan.cache.claim_name} is being deleted")
    assert found["Available"][:2] == ("False", "WaitingForCache")
    assert [(e.type, e.reason) for e in decision.events] == [
        ("Normal", "Phase"), ("Warning", "CacheDeleted")]
    # gone: made again, with a new download, and the Deployment (still in the cache) goes
    gone = Snapshot(deployment=serving(plan), service=svc)
    decision = decide(body(ready), plan, gone, [ME], NOW)
    assert kinds(decision.actions) == [
        "apply PersistentVolumeClaim", *IDENTITY_AND_JOB, "delete Deployment"]
    assert conditions(decision.status)["CacheReady"][:2] == ("False", "CacheDeleted")


@pytest.mark.parametrize(("made", "asked", "differs"), [
    ({"size": "40Gi"}, {"size": "80Gi"}, "size 40Gi; this spec asks for size 80Gi"),
    ({"size": "80Gi"}, {"size": "40Gi"}, None),  # more than asked: nothing to say
    ({"size": "40Gi"}, {"size": "40Gi"}, None),
    ({"size": "40Gi"}, {"size": "42949672960"}, None),  # the same, spelt otherwise
    ({"size": "40Gi", "storageClassName": "fast"}, {"size": "40Gi", "storageClassName": "slow"},
     "storageClassName fast; this spec asks for storageClassName slow"),
    ({"size": "40Gi"}, {"size": "40Gi", "accessMode": "ReadWriteMany"},
     "accessMode ReadWriteOnce; this spec asks for accessMode ReadWriteMany"),
])
def test_a_shared_claim_made_with_other_settings_is_reported(
        catalog: Catalog, config: OperatorConfig, made: Obj, asked: Obj,
        differs: str | None) -> None:
    first = make(catalog, config, cache=made)
    second = make(catalog, config, cache=asked)
    note = claim_differs(second, claim(first, users=(ME, OTHER)), shared=True)
    if differs is None:
        assert note is None
        return
    assert note is not None and f"is shared and was made with {differs}" in note


def test_the_claims_difference_is_in_the_status_and_one_warning(
        catalog: Catalog, config: OperatorConfig) -> None:
    first = make(catalog, config, cache={"size": "40Gi"})
    second = make(catalog, config, cache={"size": "80Gi"})
    owner = Owners.of(ME, [ME]).controller
    snap = Snapshot(claim=claim(first, users=(ME, OTHER)),
                    deployment=serving(second), service=live(service(second, owner)))
    decision = decide(body(), second, snap, [ME, OTHER], NOW)
    cache = conditions(decision.status)["CacheReady"]
    assert cache[:2] == ("True", "CacheComplete")
    assert "was made with size 40Gi; this spec asks for size 80Gi" in cache[2]
    assert [e.reason for e in decision.events if e.type == "Warning"] == ["CacheClaimDiffers"]
    # the claim keeps its size: no apply changes it
    for action in decision.actions:
        if isinstance(action, Apply) and action.obj["kind"] == "PersistentVolumeClaim":
            assert action.obj["spec"]["resources"]["requests"]["storage"] == "40Gi"
    again = decide(body(decision.status), second, snap, [ME, OTHER], NOW)
    assert not again.events


@pytest.mark.parametrize(("phase", "expected"), [
    ("Running", []),  # the replaced Job's pod still runs: no second download into the claim
    ("Succeeded", IDENTITY_AND_JOB),
    ("Failed", IDENTITY_AND_JOB),
])
def test_a_new_job_waits_for_the_pod_of_the_one_it_replaces(
        plan: Plan, phase: str, expected: list[str]) -> None:
    pod = {"metadata": {"name": "old-pod", "deletionTimestamp": GONE},
           "status": {"phase": phase}}
    assert kinds(job_actions(plan, Owners.of(ME, [ME]), None, [pod])) == expected


@pytest.mark.parametrize("mine", [None, {"name": "mine", "key": "token"}])
def test_users_naming_other_hub_tokens_share_the_job_as_it_was_made(
        catalog: Catalog, config: OperatorConfig, mine: Obj | None) -> None:
    theirs = make(catalog, config, hubTokenSecretRef={"name": "theirs", "key": "token"})
    me = make(catalog, config, **({} if mine is None else {"hubTokenSecretRef": mine}))
    made = job(theirs, (ME,))
    assert job_actions(me, Owners.of(ME, [ME]), made) == []  # not replaced for the token
    actions = job_actions(me, Owners.of(ME, [ME, OTHER]), made)
    assert kinds(actions) == IDENTITY_AND_JOB
    applied = actions[-1]
    assert isinstance(applied, Apply)
    # the apply keeps the live template (templates are immutable), the token included
    assert applied.obj["spec"] == made["spec"]


def test_a_hub_change_says_both_hubs(catalog: Catalog, config: OperatorConfig) -> None:
    old = make(catalog, config, hub="huggingface")
    new = make(catalog, config, hub="modelscope")
    assert old.cache.claim_name != new.cache.claim_name
    svc = live(service(new, Owners.of(ME, [ME]).controller))
    snap = Snapshot(claim=claim(new, complete=False), job=job(new), deployment=serving(old),
                    service=svc, owned=[(claim(old), None)])
    decision = decide(body(), new, snap, [ME], NOW)
    assert decision.actions == []
    cache = conditions(decision.status)["CacheReady"]
    assert cache[1] == "Downloading"
    assert cache[2].startswith(
        f"serving revision {old.revision} of huggingface from cache {old.cache.claim_name} "
        f"while revision {new.revision} of modelscope downloads")


FAILED_AT = "2026-01-01T10:00:00Z"
FAILED_JOB: Obj = {"metadata": {"name": "dl"}, "status": {"conditions": [
    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
     "lastTransitionTime": FAILED_AT}]}}


@pytest.mark.parametrize(("asked", "generation", "observed", "retried"), [
    (None, 1, 1, False),
    (None, 2, 1, True),  # a spec change since the failure was shown
    ("2026-01-01T10:00:01Z", 1, 1, True),
    ("2026-01-01T11:00:00+01:00", 1, 1, False),  # the same instant as the failure
    ("2026-01-01T09:59:59Z", 1, 1, False),  # asked before this failure: already retried
    ("yes please", 1, 1, False),
    ("", 1, 1, False),
])
def test_a_failed_download_is_retried_when_asked(catalog: Catalog, config: OperatorConfig,
                                                 asked: str | None, generation: int,
                                                 observed: int, retried: bool) -> None:
    plan = make_plan("md", "llm", ModelDeploymentSpec(model="deepseek-v2-chat",
                                                      sizeInBillions=16), catalog, config)
    actions = cleanup_actions(plan, generation, observed, False, FAILED_JOB, asked)
    assert bool(actions) is retried
    assert retry_after_failure(asked, {"status": {}}) is False  # a Job that did not fail
