"""The watch-fed store and its indexes, and how an event is routed to reconciles (pure)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("kopf")

from modeldeploy.catalog import builtin_catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.labels import CACHE_LABEL, DEPLOYMENT_LABEL
from modeldeploy.reconcile.read import CLAIM, JOB, MODEL_DEPLOYMENT, POD, Store, trim
from modeldeploy.runtime.operator import Operator
from modeldeploy.runtime.queue import Priority

Obj = dict[str, Any]


def claim(name: str, *owners: tuple[str, str], namespace: str = "llm") -> Obj:
    return {"metadata": {
        "name": name, "namespace": namespace, "labels": {CACHE_LABEL: name},
        "resourceVersion": "1",
        "ownerReferences": [{"apiVersion": "modeldeploy.dev/v1alpha1",
                             "kind": "ModelDeployment", "name": n, "uid": u}
                            for n, u in owners]}}


def model_deployment(name: str, uid: str, revision: str, generation: int = 1,
                     observed: int | None = None) -> Obj:
    body: Obj = {"metadata": {"name": name, "namespace": "llm", "uid": uid,
                              "generation": generation, "resourceVersion": "7"},
                 "spec": {"model": "deepseek-v2-chat", "sizeInBillions": 16,
                          "revision": revision}}
    if observed is not None:
        body["status"] = {"observedGeneration": observed}
    return body


def pod(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "llm", "labels": labels,
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "gpu-1", "containers": [{"name": "engine"}]},
            "status": {"phase": "Running"}}


@pytest.fixture
def operator() -> Operator:
    return Operator(catalog=builtin_catalog(), config=OperatorConfig())


def test_claims_owned_by_follows_the_watch() -> None:
    store = Store()
    store.put(CLAIM, claim("old", ("a", "uid-a"), ("b", "uid-b")))
    store.put(CLAIM, claim("new", ("a", "uid-a")))
    store.put(CLAIM, claim("elsewhere", ("a", "uid-a"), namespace="other"))
    assert store.claims.owned_by("llm", "uid-a") == ["new", "old"]
    assert store.claims.owned_by("llm", "uid-b") == ["old"]
    store.put(CLAIM, claim("old", ("b", "uid-b")))  # a lost an owner
    assert store.claims.owned_by("llm", "uid-a") == ["new"]
    store.remove(CLAIM, "llm", "new")
    assert store.claims.owned_by("llm", "uid-a") == []
    assert store.claims.owned_by("other", "uid-a") == ["elsewhere"]


def test_pods_are_indexed_by_job_and_by_deployment_and_trimmed() -> None:
    store = Store()
    store.put(POD, pod("dl-1", **{"job-name": "w-dl"}))
    store.put(POD, pod("engine-2", **{DEPLOYMENT_LABEL: "md"}))
    store.put(POD, pod("engine-1", **{DEPLOYMENT_LABEL: "md"}))
    assert [p["metadata"]["name"] for p in store.pods("llm", "job-name", "w-dl")] == ["dl-1"]
    assert [p["metadata"]["name"] for p in store.pods("llm", DEPLOYMENT_LABEL, "md")] == [
        "engine-1", "engine-2"]
    kept = store.get(POD, "llm", "engine-1")
    assert kept is not None and "managedFields" not in kept["metadata"]
    assert kept["spec"] == {"nodeName": "gpu-1"}
    # a pod that loses its label leaves the index; a deleted one too
    store.put(POD, pod("engine-2"))
    store.remove(POD, "llm", "engine-1")
    assert store.pods("llm", DEPLOYMENT_LABEL, "md") == []


def test_trim_keeps_what_decisions_read() -> None:
    body = {"apiVersion": "v1", "kind": "Service", "spec": {"ports": []},
            "metadata": {"name": "s", "managedFields": [{}], "labels": {"a": "b"}}}
    assert trim("Service", body) == {"apiVersion": "v1", "kind": "Service",
                                     "spec": {"ports": []},
                                     "metadata": {"name": "s", "labels": {"a": "b"}}}


def test_a_claim_event_concerns_its_users_and_its_owners(operator: Operator) -> None:
    operator.observe(MODEL_DEPLOYMENT, model_deployment("wants", "uid-w", "r1"))
    wanted = operator.store.claims.wanted(("llm", "wants"))
    assert wanted is not None
    assert operator.concerned(CLAIM, claim(wanted), "ADDED") == [
        (("llm", "wants"), Priority.EVENT)]
    # a claim nobody wants any more still concerns its owners, who must let it go
    stale = claim("stale", ("gone", "uid-g"), ("wants", "uid-w"))
    assert [k for k, _ in operator.concerned(CLAIM, stale, "MODIFIED")] == [
        ("llm", "gone"), ("llm", "wants")]
    job = {"metadata": {"name": f"{wanted}-dl", "namespace": "llm",
                        "labels": {CACHE_LABEL: wanted}, "resourceVersion": "3"}}
    assert [k for k, _ in operator.concerned(JOB, job, "MODIFIED")] == [("llm", "wants")]


def test_two_users_of_one_cache_are_both_known_before_any_reconcile(
        operator: Operator) -> None:
    operator.observe(MODEL_DEPLOYMENT, model_deployment("one", "uid-1", "r1"))
    operator.observe(MODEL_DEPLOYMENT, model_deployment("two", "uid-2", "r1"))
    operator.observe(MODEL_DEPLOYMENT, model_deployment("other", "uid-3", "r2"))
    claim_name = operator.store.claims.wanted(("llm", "one"))
    assert claim_name is not None
    assert operator.store.claims.users("llm", claim_name) == [("llm", "one"), ("llm", "two")]
    # a revision change moves it to another claim's users
    operator.observe(MODEL_DEPLOYMENT, model_deployment("two", "uid-2", "r2", generation=2))
    assert operator.store.claims.users("llm", claim_name) == [("llm", "one")]
    operator.observe_deleted(MODEL_DEPLOYMENT, model_deployment("one", "uid-1", "r1"))
    assert operator.store.claims.users("llm", claim_name) == []


def test_the_echo_of_an_own_write_queues_nothing(operator: Operator) -> None:
    written = claim("c")
    operator.own_writes[(CLAIM, "llm", "c")] = "1"
    assert operator.concerned(CLAIM, written, "MODIFIED") == []
    # the next change of the same object (someone else's) is routed again
    assert (CLAIM, "llm", "c") not in operator.own_writes
    # an event with another version (someone else's change) is routed, and ends the wait
    operator.own_writes[(CLAIM, "llm", "c")] = "1"
    assert operator.concerned(CLAIM, {**written, "metadata": {**written["metadata"],
                                                              "resourceVersion": "2"}},
                              "MODIFIED") == []  # nobody wants claim "c"
    assert (CLAIM, "llm", "c") not in operator.own_writes


def test_new_specs_come_before_re_checks(operator: Operator) -> None:
    fresh = model_deployment("fresh", "uid-f", "r1", generation=2, observed=1)
    settled = model_deployment("settled", "uid-s", "r1", generation=2, observed=2)
    assert operator.concerned(MODEL_DEPLOYMENT, fresh, "MODIFIED") == [
        (("llm", "fresh"), Priority.NEW)]
    assert operator.concerned(MODEL_DEPLOYMENT, settled, "MODIFIED") == [
        (("llm", "settled"), Priority.EVENT)]
    assert operator.concerned(MODEL_DEPLOYMENT, settled, "DELETED") == []


def test_a_late_apply_response_does_not_undo_a_newer_watch_event() -> None:
    store = Store()
    bound = {**claim("c"), "status": {"phase": "Bound"}}
    bound["metadata"] = {**bound["metadata"], "resourceVersion": "12"}
    store.put(CLAIM, bound)
    applied = {**claim("c"), "status": {"phase": "Pending"}}
    applied["metadata"] = {**applied["metadata"], "resourceVersion": "11"}
    kept = store.put(CLAIM, applied, only_newer=True)
    assert kept["status"]["phase"] == "Bound"
    store.put(CLAIM, applied)  # a watch event is the truth, whatever its version
    assert (store.get(CLAIM, "llm", "c") or {})["status"]["phase"] == "Pending"
