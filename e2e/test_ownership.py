"""What is not the operator's is never touched; drift of what is its own is put back, on the
real control plane."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import yaml

from harness import Cluster
from helpers import (
    MD,
    apply,
    condition,
    get,
    items,
    lite,
    wait_available,
    wait_condition,
    wait_for,
)
from operator_process import OperatorProcess

Obj = dict[str, Any]


def _create(cluster: Cluster, namespace: str, doc: Obj) -> Obj:
    created: Obj = json.loads(cluster.kubectl("create", "-n", namespace, "-o", "json", "-f", "-",
                                              input=yaml.safe_dump(doc)).stdout)
    return created


def _users_service(name: str, **metadata: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, **metadata},
            "spec": {"selector": {"app": "mine"},
                     "ports": [{"name": "web", "port": 9999, "targetPort": 9999}]}}


def _users_deployment(name: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "mine"}},
                     "template": {"metadata": {"labels": {"app": "mine"}},
                                  "spec": {"containers": [{"name": "c", "image": "mine:1"}]}}}}


def _unchanged(cluster: Cluster, namespace: str, kind: str, before: Obj) -> None:
    """The object is exactly as its owner left it (no write at all: same resourceVersion)."""
    now = get(cluster, kind, namespace, before["metadata"]["name"])
    assert now is not None, f"{kind} {before['metadata']['name']} is gone"
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert now["spec"] == before["spec"]
    assert now["metadata"].get("labels") == before["metadata"].get("labels")
    assert now["metadata"].get("ownerReferences") == before["metadata"].get("ownerReferences")
    managers = json.loads(cluster.kubectl(
        "get", kind, before["metadata"]["name"], "-n", namespace, "-o", "json",
        "--show-managed-fields").stdout)["metadata"].get("managedFields") or []
    assert "modeldeploy" not in {m.get("manager") for m in managers}


def _nothing_of(cluster: Cluster, namespace: str, name: str, but: str) -> None:
    """No claim, Job, Deployment or Service was made for the ModelDeployment (``but``: the
    kind of the user's object, which is the only one of its kind)."""
    for kind in ("pvc", "jobs", "deployments", "services", "serviceaccounts", "roles"):
        made = [o["metadata"]["name"] for o in items(cluster, kind, namespace)
                if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") ==
                "modeldeploy" and o["metadata"]["name"] != but]
        assert made == [], f"{kind} made for {name}: {made}"


def _warned(cluster: Cluster, namespace: str, name: str, reason: str) -> list[Obj]:
    return items(cluster, "events", namespace,
                 f"--field-selector=involvedObject.name={name},reason={reason},type=Warning")


def test_a_users_service_with_the_name_is_never_taken_over(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    users = _create(cluster, namespace, _users_service("taken"))
    apply(cluster, namespace, lite("taken"))
    failed = wait_condition(cluster, namespace, "taken", "Available", "NameConflict")
    assert failed["status"] == "False"
    assert failed["message"].startswith("Service taken already exists and is not this "
                                        "ModelDeployment's: it was not created by modeldeploy")
    assert "delete or rename that Service" in failed["message"]
    md = get(cluster, MD, namespace, "taken")
    assert md is not None and md["status"]["phase"] == "Failed"
    wait_for("a Warning event", lambda: _warned(cluster, namespace, "taken", "NameConflict"))
    time.sleep(3)  # retries come and go
    _unchanged(cluster, namespace, "service", users)
    _nothing_of(cluster, namespace, "taken", but="taken")

    cluster.kubectl("delete", "-n", namespace, f"{MD}/taken", "--wait=true")
    time.sleep(3)  # the garbage collector's chance to (wrongly) take it
    _unchanged(cluster, namespace, "service", users)


def test_a_users_deployment_with_the_name_stops_everything_until_it_is_gone(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _create(cluster, namespace, _users_deployment("mine"))

    def settled() -> Obj | None:  # the deployment controller has done its own writes
        found = get(cluster, "deployment", namespace, "mine") or {}
        observed = found.get("status", {}).get("observedGeneration")
        return found if observed == found["metadata"]["generation"] else None

    users = wait_for("the user's Deployment to settle", settled)
    time.sleep(1)
    users = settled() or users
    apply(cluster, namespace, lite("mine"))
    failed = wait_condition(cluster, namespace, "mine", "Available", "NameConflict")
    assert failed["message"].startswith("Deployment mine already exists and is not this "
                                        "ModelDeployment's")
    # found before anything was created: no cache, no download, no Service
    time.sleep(3)
    _nothing_of(cluster, namespace, "mine", but="mine")
    _unchanged(cluster, namespace, "deployment", users)

    # the name is freed: the next check finds it so, and the model comes up
    cluster.kubectl("delete", "-n", namespace, "deployment/mine", "--wait=true")
    wait_available(cluster, namespace, "mine", timeout=120)
    deployment = get(cluster, "deployment", namespace, "mine")
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"


def test_our_label_with_someone_elses_owner_is_not_ours(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    # a real owner (the garbage collector removes objects whose owner does not exist)
    holder = _create(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "holder"}})
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "holder",
             "uid": holder["metadata"]["uid"]}
    users = _create(cluster, namespace, _users_service(
        "lookalike", labels={"app.kubernetes.io/managed-by": "modeldeploy"},
        ownerReferences=[owner]))
    apply(cluster, namespace, lite("lookalike"))
    failed = wait_condition(cluster, namespace, "lookalike", "Available", "NameConflict")
    assert "Service lookalike already exists and is not this ModelDeployment's: it is owned " \
        "by ConfigMap holder" in failed["message"]
    time.sleep(3)
    _unchanged(cluster, namespace, "service", users)
    _nothing_of(cluster, namespace, "lookalike", but="lookalike")
    cluster.kubectl("delete", "-n", namespace, f"{MD}/lookalike", "--wait=true")
    time.sleep(3)
    _unchanged(cluster, namespace, "service", users)


def _collected_cache_name(cluster: Cluster, namespace: str) -> str:
    """The cache claim's name, as a first ModelDeployment resolves it, once that one and its
    cache are gone again (the name is free for a user's object)."""
    apply(cluster, namespace, lite("first"))
    wait_available(cluster, namespace, "first")
    claim_name: str = (get(cluster, MD, namespace, "first") or {})["status"]["resolved"][
        "cacheClaim"]
    cluster.kubectl("delete", "-n", namespace, f"{MD}/first", "--wait=true")
    wait_for("the cache to be collected", lambda: get(cluster, "pvc", namespace,
                                                      claim_name) is None, timeout=60)
    return claim_name


def test_a_users_claim_with_the_cache_name_is_not_used(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    claim_name = _collected_cache_name(cluster, namespace)
    users = _create(cluster, namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim_name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    apply(cluster, namespace, lite("second"))
    failed = wait_condition(cluster, namespace, "second", "Available", "NameConflict")
    assert failed["message"].startswith(f"PersistentVolumeClaim {claim_name} already exists")
    time.sleep(3)
    now = get(cluster, "pvc", namespace, claim_name) or {}
    assert now["metadata"].get("ownerReferences") is None
    assert now["metadata"].get("labels") is None
    assert not [k for k in now["metadata"].get("annotations", {}) if "modeldeploy" in k]
    assert now["spec"]["resources"] == users["spec"]["resources"]
    assert items(cluster, "jobs", namespace) == []
    assert get(cluster, "service", namespace, "second") is None


def _ports(cluster: Cluster, namespace: str, name: str) -> list[Obj]:
    ports: list[Obj] = (get(cluster, "service", namespace, name) or {})["spec"]["ports"]
    return ports


def test_a_hand_edited_service_port_is_put_back(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("ports"))
    wait_available(cluster, namespace, "ports")
    rendered = _ports(cluster, namespace, "ports")
    # our port renamed and retargeted, and a second port that takes the name "http"
    edited = [{**rendered[0], "name": "web", "targetPort": 9000},
              {"name": "http", "port": 9001, "targetPort": 9001, "protocol": "TCP"}]
    cluster.kubectl("patch", "service", "ports", "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec/ports", "value": edited}]))
    wait_for("the ports to be put back",
             lambda: _ports(cluster, namespace, "ports") == rendered, timeout=30)
    # another port number for ours (the list is keyed by port: a new entry, ours is gone)
    moved = [{**rendered[0], "port": 8001}]
    cluster.kubectl("patch", "service", "ports", "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec/ports", "value": moved}]))
    wait_for("the port number to be put back",
             lambda: _ports(cluster, namespace, "ports") == rendered, timeout=30)
    md = get(cluster, MD, namespace, "ports")
    assert condition(md, "Available")["reason"] == "Ready"
    assert condition(md, "Degraded")["reason"] == "AllReplicasReady"
    # converged: nothing more is written
    time.sleep(2)
    before, writes = get(cluster, "service", namespace, "ports"), operator.writes()
    time.sleep(4)
    assert (get(cluster, "service", namespace, "ports") or {})["metadata"][
        "resourceVersion"] == (before or {})["metadata"]["resourceVersion"]
    assert operator.writes() == writes


def _refuse_services(cluster: Cluster, namespace: str, name: str) -> str:
    policy = f"no-service-{namespace}"[:63]
    docs = [{
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [""], "apiVersions": ["v1"],
                     "operations": ["CREATE", "UPDATE"], "resources": ["services"]}]},
                 "validations": [{"expression": f"object.metadata.name != '{name}'",
                                  "message": "services of that name are not allowed here"}]},
    }, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}},
    }]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    probe = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
             "spec": {"ports": [{"port": 1}]}}

    def denied() -> bool:
        result = cluster.kubectl("create", "-n", namespace, "--dry-run=server", "-f", "-",
                                 input=yaml.safe_dump(probe), check=False)
        return result.returncode != 0

    wait_for("the policy to take effect", denied, timeout=60)
    return policy


def _allow_services(cluster: Cluster, namespace: str, policy: str) -> None:
    for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
        cluster.kubectl("delete", kind, policy, "--ignore-not-found")
    probe = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "refused"},
             "spec": {"ports": [{"port": 1}]}}
    wait_for("the policy to be gone", lambda: cluster.kubectl(
        "create", "-n", namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe),
        check=False).returncode == 0, timeout=60)


def test_a_refused_child_write_does_not_freeze_the_status(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    policy = _refuse_services(cluster, namespace, "refused")
    try:
        apply(cluster, namespace, lite("refused"))
        # the refused Service is said, and everything else goes on: the engine comes up
        degraded = wait_condition(cluster, namespace, "refused", "Degraded", "ApplyFailed",
                                  timeout=90)
        assert degraded["status"] == "True"
        assert degraded["message"].startswith(
            "the API server refused the write of Service refused: ")
        assert "services of that name are not allowed here" in degraded["message"]
        wait_for("the engine to be ready regardless", lambda: condition(
            get(cluster, MD, namespace, "refused"), "Available").get("reason") == "Ready",
            timeout=90)
        md = get(cluster, MD, namespace, "refused") or {}
        assert md["status"]["phase"] == "Ready"
        assert condition(md, "Degraded")["reason"] == "ApplyFailed"
        assert get(cluster, "deployment", namespace, "refused") is not None
        assert _warned(cluster, namespace, "refused", "ApplyFailed")
    finally:
        _allow_services(cluster, namespace, policy)
    # refused writes are retried (with backoff: each failure doubles the wait, up to minutes);
    # any event of the ModelDeployment retries at once
    assert operator.log().count("refused write of Service") >= 2
    cluster.kubectl("annotate", "-n", namespace, f"{MD}/refused", "example.com/nudge=1")
    wait_condition(cluster, namespace, "refused", "Degraded", "AllReplicasReady", timeout=60)
    assert get(cluster, "service", namespace, "refused") is not None


def _template(cluster: Cluster, namespace: str, name: str) -> Obj:
    template: Obj = (get(cluster, "deployment", namespace, name) or {})["spec"]["template"]
    return template


def test_the_whole_pod_template_is_ours(cluster: Cluster, namespace: str,
                                        operator: OperatorProcess) -> None:
    apply(cluster, namespace, lite("tmpl"))
    wait_available(cluster, namespace, "tmpl")
    rendered = _template(cluster, namespace, "tmpl")
    tampered = copy.deepcopy(rendered)
    spec = tampered["spec"]
    spec["hostNetwork"] = True
    spec["containers"][0]["securityContext"] = {"privileged": True}
    spec["containers"].append({"name": "miner", "image": "evil:1"})
    spec["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    spec["containers"][0]["volumeMounts"].append({"name": "root", "mountPath": "/host"})
    cluster.kubectl("patch", "deployment", "tmpl", "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/spec/template", "value": tampered}]))

    def put_back() -> bool:
        return _template(cluster, namespace, "tmpl") == rendered

    wait_for("the rendered template to be put back", put_back, timeout=30)
    # the same again, one field at a time with a server-side apply of another manager
    extra = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "tmpl", "namespace": namespace},
             "spec": {"template": {"spec": {"hostNetwork": True}}}}
    cluster.kubectl("apply", "--server-side", "--field-manager=intruder", "--force-conflicts",
                    "-f", "-", input=yaml.safe_dump(extra))
    wait_for("hostNetwork to be removed", put_back, timeout=30)
    wait_available(cluster, namespace, "tmpl")
    time.sleep(2)
    before, writes = get(cluster, "deployment", namespace, "tmpl"), operator.writes()
    time.sleep(4)
    assert (get(cluster, "deployment", namespace, "tmpl") or {})["metadata"][
        "resourceVersion"] == (before or {})["metadata"]["resourceVersion"]
    assert operator.writes() == writes
    md = get(cluster, MD, namespace, "tmpl")
    assert condition(md, "Available")["reason"] == "Ready"
    # a restart asked for by hand is no drift
    cluster.kubectl("rollout", "restart", "deployment/tmpl", "-n", namespace)
    restarted = wait_for("the restart's stamp", lambda: _template(cluster, namespace, "tmpl")[
        "metadata"].get("annotations", {}).get("kubectl.kubernetes.io/restartedAt"))
    time.sleep(4)
    assert _template(cluster, namespace, "tmpl")["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"] == restarted


def _creates(operator: OperatorProcess, kind: str) -> float:
    return sum(v for k, v in operator.metrics().items()
               if k.startswith("modeldeploy_api_requests_total") and f'kind="{kind}"' in k and
               'verb="create"' in k)


def test_a_users_job_with_the_download_name_leaves_nothing_half_made(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    claim_name = _collected_cache_name(cluster, namespace)
    job_name = f"{claim_name}-dl"
    users = _create(cluster, namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name},
        "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "mine:1"}]}}}})
    claims_made = _creates(operator, "PersistentVolumeClaim")
    apply(cluster, namespace, lite("second"))
    failed = wait_condition(cluster, namespace, "second", "Available", "NameConflict")
    assert failed["message"].startswith(f"Job {job_name} already exists and is not this "
                                        "ModelDeployment's: it was not created by modeldeploy")
    # the claim made in the same run is deleted again, and the retries only check the name
    wait_for("the claim made before the conflict to go", lambda: get(
        cluster, "pvc", namespace, claim_name) is None, timeout=30)
    time.sleep(4)
    assert _creates(operator, "PersistentVolumeClaim") == claims_made + 1
    assert get(cluster, "pvc", namespace, claim_name) is None
    assert get(cluster, "service", namespace, "second") is None
    now = get(cluster, "job", namespace, job_name) or {}
    assert now["metadata"].get("ownerReferences") is None
    assert now["spec"]["template"]["spec"]["containers"] == \
        users["spec"]["template"]["spec"]["containers"]
    cluster.kubectl("delete", "-n", namespace, f"{MD}/second", "--wait=true")
    time.sleep(2)
    assert get(cluster, "job", namespace, job_name) is not None
