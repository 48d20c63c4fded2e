"""What is ours, name conflicts and drift repair, by table (pure: dict fixtures, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.actions import Apply, Check, Delete, Replace
from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.objects import Owner, Owners, owner_reference
from modeldeploy.plan import Plan, make_plan
from modeldeploy.reconcile.decide import decide, with_failures
from modeldeploy.reconcile.ownership import (
    RESTARTED_AT,
    SERVICE_OWNED,
    TEMPLATE_HASH_ANNOTATION,
    deployment_actions,
    deployment_owned,
    foreign_reason,
    foreign_template_managers,
    mark_creates,
    replaced,
    service_actions,
    trim_managed_fields,
    with_template_hash,
)
from modeldeploy.reconcile.read import Snapshot, trim
from modeldeploy.render.service import service
from modeldeploy.render.serving import deployment

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
ME = Owner("md", "uid-md")
OURS = {"app.kubernetes.io/managed-by": "modeldeploy"}


@pytest.fixture
def plan(catalog: Catalog, config: OperatorConfig) -> Plan:
    spec = ModelDeploymentSpec.model_validate({"model": "deepseek-v2-chat",
                                               "sizeInBillions": 16})
    return make_plan("md", "llm", spec, catalog, config)


def body(status: Obj | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": "md", "namespace": "llm", "uid": "uid-md",
                             "generation": 1}}
    if status is not None:
        obj["status"] = status
    return obj


def ref(kind: str, name: str, uid: str, api: str = "modeldeploy.dev/v1alpha1") -> Obj:
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid}


CONTROLLED = {"kind": "Service", "metadata": {
    "name": "md", "ownerReferences": [owner_reference(ME, True)]}}
SHARED = {"kind": "PersistentVolumeClaim", "metadata": {
    "name": "cache", "ownerReferences": [owner_reference(ME, False)]}}


@pytest.mark.parametrize(("desired", "labels", "owners", "why"), [
    (CONTROLLED, {}, [], "it was not created by modeldeploy (it has no "
                         "app.kubernetes.io/managed-by=modeldeploy label)"),
    (CONTROLLED, {"app.kubernetes.io/managed-by": "helm"}, [ref("ModelDeployment", "md",
                                                                "uid-md")],
     "it was not created by modeldeploy (it has no app.kubernetes.io/managed-by=modeldeploy "
     "label)"),
    (CONTROLLED, OURS, [ref("ConfigMap", "holder", "u1", api="v1")],
     "it is owned by ConfigMap holder"),
    (CONTROLLED, OURS, [ref("ModelDeployment", "old", "uid-old")],
     "it belongs to another ModelDeployment old (uid uid-old)"),
    (CONTROLLED, OURS, [ref("ModelDeployment", "md", "uid-md")], None),
    (CONTROLLED, OURS, [], None),  # orphaned from us: adopted
    # a shared cache: every ModelDeployment may own it, nothing else may
    (SHARED, OURS, [ref("ModelDeployment", "a", "uid-a"), ref("ModelDeployment", "b", "u-b")],
     None),
    (SHARED, OURS, [ref("ModelDeployment", "a", "uid-a"), ref("StatefulSet", "db", "u", "v1")],
     "it is owned by StatefulSet db"),
    (SHARED, {}, [], "it was not created by modeldeploy (it has no "
                     "app.kubernetes.io/managed-by=modeldeploy label)"),
])
def test_what_is_ours(desired: Obj, labels: dict[str, str], owners: list[Obj],
                      why: str | None) -> None:
    live = {"metadata": {"name": desired["metadata"]["name"], "labels": labels,
                         "ownerReferences": owners}}
    assert foreign_reason(desired, live) == why


def test_a_name_taken_by_an_object_the_watches_do_not_show_stops_everything(
        plan: Plan) -> None:
    taken = {("Service", "md"): "it was not created by modeldeploy (it has no "
                                "app.kubernetes.io/managed-by=modeldeploy label)"}
    decision = decide(body(), plan, Snapshot(taken=taken), [ME], NOW)
    # no create, apply or delete: only the name is checked again
    assert [type(a) for a in decision.actions] == [Check]
    assert decision.actions[0].key == ("Service", "llm", "md")
    assert decision.status is not None and decision.status["phase"] == "Failed"
    available = next(c for c in decision.status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("False", "NameConflict")
    assert available["message"] == (
        "Service md already exists and is not this ModelDeployment's: it was not created by "
        "modeldeploy (it has no app.kubernetes.io/managed-by=modeldeploy label). modeldeploy "
        "leaves it as it is and creates nothing for this ModelDeployment until the name is "
        "free: delete or rename that Service, or give the ModelDeployment another name")
    assert [(e.type, e.reason) for e in decision.events] == [
        ("Normal", "Phase"), ("Warning", "NameConflict")]
    # the same again: nothing to write, no second warning
    again = decide(body(decision.status), plan, Snapshot(taken=taken), [ME], NOW)
    assert again.status is None and again.events == []


def test_a_watched_lookalike_with_another_owner_is_left_alone(plan: Plan) -> None:
    lookalike = service(plan, None)
    lookalike["metadata"]["ownerReferences"] = [ref("ConfigMap", "holder", "u1", api="v1")]
    decision = decide(body(), plan, Snapshot(service=lookalike), [ME], NOW)
    assert decision.actions == []
    assert decision.status is not None
    assert "Service md already exists" in decision.status["conditions"][-1]["message"]
    assert "it is owned by ConfigMap holder" in decision.status["conditions"][-1]["message"]


def test_a_new_model_deployment_checks_its_deployments_name_before_creating(
        plan: Plan) -> None:
    actions = decide(body(), plan, Snapshot(), [ME], NOW).actions
    assert isinstance(actions[0], Check) and actions[0].key == ("Deployment", "llm", "md")
    assert all(a.create for a in actions[1:] if isinstance(a, Apply))


def test_objects_the_snapshot_does_not_hold_are_created_not_applied() -> None:
    a = {"kind": "Service", "metadata": {"name": "a", "namespace": "n"}}
    b = {"kind": "Job", "metadata": {"name": "b", "namespace": "n"}}
    partial = Apply(a, field_manager="other", partial=True)
    marked = mark_creates([Apply(a), Apply(b), partial, Delete("Job", "n", "b")],
                          {("Service", "a")})
    assert marked == [Apply(a), Apply(b, create=True), partial, Delete("Job", "n", "b")]


def _served(plan: Plan) -> tuple[Obj, Obj]:
    owner = Owners.of(ME, [ME]).controller
    desired = with_template_hash(deployment(plan, owner))
    live = copy.deepcopy(desired)
    live["metadata"] |= {"uid": "x", "resourceVersion": "7", "labels": {
        **desired["metadata"]["labels"]}}
    # server defaults: never drift
    live["spec"]["revisionHistoryLimit"] = 10
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    return desired, live


def _managed(manager: str, template: Obj, replicas: bool = False) -> Obj:
    spec: Obj = {"f:template": template}
    if replicas:
        spec["f:replicas"] = {}
    return {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": spec}}


def test_server_defaults_and_our_own_fields_are_no_drift(plan: Plan) -> None:
    desired, live = _served(plan)
    live["metadata"]["managedFields"] = [
        _managed("modeldeploy", {"f:spec": {"f:containers": {}}}),
        {"manager": "kube-controller-manager", "operation": "Update",
         "fieldsV1": {"f:metadata": {"f:annotations": {
             "f:deployment.kubernetes.io/revision": {}}}, "f:status": {}}},
        _managed("modeldeploy-autoscaler", {}, replicas=True),
        # a restart asked for by hand
        _managed("kubectl-rollout", {"f:metadata": {"f:annotations": {
            f"f:{RESTARTED_AT}": {}}}}),
    ]
    assert deployment_actions(desired, trim("Deployment", live)) == []


@pytest.mark.parametrize("tamper", [
    lambda t: t["spec"].update(hostNetwork=True),
    lambda t: t["spec"]["containers"].append({"name": "miner", "image": "evil:1"}),
    lambda t: t["spec"]["containers"][0].update(securityContext={"privileged": True}),
    lambda t: t["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
])
def test_what_another_manager_added_to_the_template_is_drift(plan: Plan, tamper: Any) -> None:
    desired, live = _served(plan)
    tamper(live["spec"]["template"])
    live["metadata"]["managedFields"] = [
        _managed("modeldeploy", {"f:spec": {}}),
        _managed("kubectl-edit", {"f:spec": {"f:hostNetwork": {}}})]
    # matches() alone would not see it: every field we set is there
    stored = trim("Deployment", live)
    assert foreign_template_managers(stored) == ["kubectl-edit"]
    assert deployment_actions(desired, stored) == [Replace(desired, deployment_owned(desired))]


def test_a_changed_rendering_is_drift_even_where_a_field_was_dropped(plan: Plan) -> None:
    desired, live = _served(plan)
    live["spec"]["template"]["spec"]["nodeSelector"] = {"old": "choice"}
    live["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] = "0123456789abcdef"
    assert [type(a) for a in deployment_actions(desired, live)] == [Replace]


def test_the_repair_puts_the_template_back_and_strips_other_managers(plan: Plan) -> None:
    desired, live = _served(plan)
    del desired["spec"]["replicas"]  # autoscaled: the replicas are the scaler's
    live["spec"]["replicas"] = 3
    live["status"] = {"readyReplicas": 3}
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    template = live["spec"]["template"]
    template["spec"]["hostNetwork"] = True
    template["spec"]["containers"].append({"name": "miner", "image": "evil:1"})
    template["metadata"]["annotations"] = {RESTARTED_AT: "2026-01-01T00:00:00Z"}
    live["metadata"]["managedFields"] = [
        _managed("modeldeploy", {"f:spec": {}}),
        _managed("intruder", {"f:spec": {"f:hostNetwork": {}}}, replicas=True),
        _managed("kubectl-edit", {"f:spec": {"f:containers": {}}}),
        {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {
            "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
    ]
    put = replaced(live, desired, deployment_owned(desired))
    rendered = copy.deepcopy(desired["spec"]["template"])
    rendered["metadata"]["annotations"] = {RESTARTED_AT: "2026-01-01T00:00:00Z"}
    assert put["spec"]["template"] == rendered
    assert put["spec"]["replicas"] == 3
    assert "status" not in put
    assert put["metadata"]["resourceVersion"] == "7"
    assert put["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert put["metadata"]["managedFields"] == [
        _managed("modeldeploy", {"f:spec": {}}),
        {"manager": "intruder", "operation": "Update",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        live["metadata"]["managedFields"][3]]


def test_the_store_keeps_only_what_the_drift_test_reads() -> None:
    entries = [_managed("modeldeploy", {"f:spec": {"f:containers": {}}}, replicas=True),
               _managed("kubectl-rollout", {"f:metadata": {"f:annotations": {
                   f"f:{RESTARTED_AT}": {}}}}),
               _managed("intruder", {"f:spec": {"f:hostNetwork": {}}}),
               {"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}}]
    assert trim_managed_fields(entries) == [
        {"manager": "modeldeploy", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "intruder", "fieldsV1": {"f:spec": {"f:template": {
            "f:spec": {"f:hostNetwork": {}}}}}}]


@pytest.mark.parametrize("ports", [
    [{"name": "web", "port": 8000, "targetPort": 9000, "protocol": "TCP"},
     {"name": "http", "port": 9001, "targetPort": 9001, "protocol": "TCP"}],
    [{"name": "http", "port": 8001, "targetPort": "http", "protocol": "TCP",
      "appProtocol": "http"}],
    [{"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP",
      "appProtocol": "http"}],
])
def test_a_hand_edited_service_port_is_replaced_whole(plan: Plan, ports: list[Obj]) -> None:
    desired = service(plan, Owners.of(ME, [ME]).controller)
    live = copy.deepcopy(desired)
    live["metadata"]["resourceVersion"] = "3"
    live["spec"] |= {"clusterIP": "10.0.0.7", "ports": ports}
    actions = service_actions(desired, live)
    assert actions == [Replace(desired, SERVICE_OWNED)]
    put = replaced(live, desired, SERVICE_OWNED)
    assert put["spec"]["ports"] == desired["spec"]["ports"]
    assert put["spec"]["clusterIP"] == "10.0.0.7"
    assert service_actions(desired, {**put, "spec": {**put["spec"]}}) == []


def test_a_refused_write_is_said_and_the_rest_of_the_status_stays(plan: Plan) -> None:
    decided = {"phase": "Ready", "observedGeneration": 1, "conditions": [
        {"type": "Available", "status": "True", "reason": "Ready", "message": "1 of 1",
         "lastTransitionTime": NOW, "observedGeneration": 1},
        {"type": "Degraded", "status": "False", "reason": "AllReplicasReady",
         "message": "1 of 1", "lastTransitionTime": NOW, "observedGeneration": 1}]}
    refused = [("Service", "md", 'services "md" is forbidden: not here')]
    status, events = with_failures(body(), decided, refused, NOW)
    assert status is not None and status["phase"] == "Ready"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert degraded["message"] == ('the API server refused the write of Service md: services '
                                   '"md" is forbidden: not here; retrying with backoff')
    assert [(e.type, e.reason) for e in events] == [("Warning", "ApplyFailed")]
    # refused again on the retry: the status already says so
    assert with_failures(body(status), decided, refused, NOW) == (None, [])
    assert with_failures(body(status), None, refused, NOW) == (None, [])
