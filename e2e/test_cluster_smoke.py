"""Smoke tests proving that the e2e control plane is the real one: CRD validation with CEL,
admission policies, scheduling on extended resources, garbage collection, Jobs, server-side
apply, RBAC and volume binding behave as in any Kubernetes cluster."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from harness import Cluster

T = TypeVar("T")
Json = dict[str, Any]
pytestmark = pytest.mark.harness

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
OUTCOME = "e2e.modeldeploy.dev/outcome"
IMAGE = "registry.example/e2e/idle:1"  # never pulled: kwok plays the containers


# ---------------------------------------------------------------------------------------------
# helpers


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Polls `probe` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def apply(cluster: Cluster, namespace: str | None, *manifests: Json) -> None:
    scope = ["-n", namespace] if namespace else []
    cluster.kubectl("apply", *scope, "-f", "-", input=yaml.safe_dump_all(manifests))


def get(cluster: Cluster, namespace: str | None, *what: str) -> Json:
    scope = ["-n", namespace] if namespace else []
    result: Json = json.loads(cluster.kubectl("get", *scope, *what, "-o", "json").stdout)
    return result


def try_get(cluster: Cluster, namespace: str, *what: str) -> Json | None:
    result = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def pods(cluster: Cluster, namespace: str, selector: str) -> list[Json]:
    items: list[Json] = get(cluster, namespace, "pods", "-l", selector)["items"]
    return items


def condition(obj: Json, kind: str) -> Json | None:
    found = [c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind]
    return found[0] if found else None


def is_ready(pod: Json) -> bool:
    ready = condition(pod, "Ready")
    return ready is not None and ready["status"] == "True"


def pod_template(app: str, gpus: int = 0, annotations: dict[str, str] | None = None) -> Json:
    container: Json = {"name": "main", "image": IMAGE}
    spec: Json = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {GPU: str(gpus)}}
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"labels": {"app": app}, "annotations": annotations or {}}, "spec": spec}


def deployment(name: str, gpus: int = 0, node_selector: dict[str, str] | None = None) -> Json:
    template = pod_template(name, gpus)
    if node_selector:
        template["spec"]["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template},
    }


def job(name: str, annotations: dict[str, str] | None = None) -> Json:
    template = pod_template(name, annotations=annotations)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": template},
    }


def single_pod(cluster: Cluster, namespace: str, app: str) -> Json | None:
    found = pods(cluster, namespace, f"app={app}")
    return found[0] if len(found) == 1 else None


def ready_pod(cluster: Cluster, namespace: str, app: str) -> Json | None:
    pod = single_pod(cluster, namespace, app)
    return pod if pod and is_ready(pod) else None


def scheduled_pod(cluster: Cluster, namespace: str, app: str) -> Json | None:
    pod = single_pod(cluster, namespace, app)
    return pod if pod and pod["spec"].get("nodeName") else None


def succeeds(cluster: Cluster, *args: str) -> bool:
    return cluster.kubectl(*args, check=False).returncode == 0


def config_map(name: str, data: dict[str, str] | None = None) -> Json:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {}}


# ---------------------------------------------------------------------------------------------
# the cluster itself


def test_server_is_the_pinned_kubernetes(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    health = cluster.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "[+]etcd ok" in health
    assert "readyz check passed" in health


def test_kwok_nodes_advertise_gpus(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in get(cluster, None, "nodes")["items"]}
    assert set(nodes) >= {"gpu-8x80", "gpu-1x80", "gpu-1x40", "cpu-0"}
    assert all(is_ready(node) for node in nodes.values())
    expected = {
        "gpu-8x80": ("8", "NVIDIA-H100-80GB-HBM3", "81920"),
        "gpu-1x80": ("1", "NVIDIA-H100-80GB-HBM3", "81920"),
        "gpu-1x40": ("1", "NVIDIA-A100-SXM4-40GB", "40960"),
    }
    for name, (count, product, memory) in expected.items():
        node = nodes[name]
        labels = node["metadata"]["labels"]
        assert node["status"]["allocatable"][GPU] == count
        assert labels["nvidia.com/gpu.product"] == product
        assert labels["nvidia.com/gpu.memory"] == memory
        assert labels["nvidia.com/gpu.count"] == count
        assert {"key": GPU, "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert GPU not in nodes["cpu-0"]["status"]["allocatable"]
    assert nodes["gpu-8x80"]["status"]["capacity"]["cpu"] == "192"


def test_namespace_gets_default_service_account_and_root_ca(
    cluster: Cluster, namespace: str
) -> None:
    assert get(cluster, namespace, "serviceaccount", "default")["metadata"]["name"] == "default"
    root_ca = wait_for(
        "kube-root-ca.crt", lambda: try_get(cluster, namespace, "configmap", "kube-root-ca.crt")
    )
    assert "BEGIN CERTIFICATE" in root_ca["data"]["ca.crt"]


# ---------------------------------------------------------------------------------------------
# validation


@pytest.fixture
def widget_crd(cluster: Cluster) -> Iterator[str]:
    group = f"s{uuid.uuid4().hex[:8]}.e2e.modeldeploy.dev"
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer"},
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
            }
        ],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }
    apply(cluster, None, crd)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s")
    try:
        yield group
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_crd_cel_rule_rejects_invalid_object(
    cluster: Cluster, namespace: str, widget_crd: str
) -> None:
    def widget(name: str, low: int, high: int) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": f"{widget_crd}/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"minReplicas": low, "maxReplicas": high},
            }
        )

    # discovery of a fresh CRD can lag a moment behind Established
    wait_for("the Widget API", lambda: succeeds(cluster, "get", f"widgets.{widget_crd}", "-A"))
    cluster.kubectl("create", "-f", "-", input=widget("ok", 1, 3))
    refused = cluster.kubectl("create", "-f", "-", input=widget("bad", 5, 2), check=False)
    assert refused.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in refused.stderr
    assert "Invalid value" in refused.stderr
    schema_refused = cluster.kubectl("create", "-f", "-", input=widget("neg", -1, 2), check=False)
    assert "should be greater than or equal to 0" in schema_refused.stderr


def test_validating_admission_policy_denies(cluster: Cluster, namespace: str) -> None:
    name = f"max-replicas-{namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [
                {"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"}
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    apply(cluster, None, policy, binding)
    try:
        big = deployment("big")
        big["spec"]["replicas"] = 10

        def denied() -> str | None:
            result = cluster.kubectl(
                "create", "-n", namespace, "--dry-run=server", "-f", "-",
                input=yaml.safe_dump(big), check=False,
            )  # fmt: skip
            return result.stderr if result.returncode != 0 else None

        message = wait_for("the policy to take effect", denied, timeout=60)
        assert "at most 5 replicas" in message
        assert f"ValidatingAdmissionPolicy '{name}'" in message
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name
        )


# ---------------------------------------------------------------------------------------------
# scheduling


def test_eight_gpu_deployment_runs_only_on_the_eight_gpu_node(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, deployment("big-model", gpus=8))
    cluster.kubectl("rollout", "status", "deployment/big-model", "-n", namespace, "--timeout=90s")
    pod = wait_for("a ready pod", lambda: ready_pod(cluster, namespace, "big-model"))
    assert pod["spec"]["nodeName"] == "gpu-8x80"
    assert is_ready(pod)


def test_sixteen_gpus_stay_pending_with_the_schedulers_reason(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, deployment("too-big", gpus=16))

    def unschedulable() -> Json | None:
        pod = single_pod(cluster, namespace, "too-big")
        scheduled = condition(pod, "PodScheduled") if pod else None
        return scheduled if scheduled and scheduled.get("reason") == "Unschedulable" else None

    scheduled = wait_for("the scheduler's verdict", unschedulable)
    assert scheduled["status"] == "False"
    assert "0/4 nodes are available" in scheduled["message"]
    assert f"Insufficient {GPU}" in scheduled["message"]
    pod = single_pod(cluster, namespace, "too-big")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector=reason=FailedScheduling", "-o", "json"
    ).stdout
    assert "default-scheduler" in events


def test_gpu_product_label_selects_the_node(cluster: Cluster, namespace: str) -> None:
    selector = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    apply(cluster, namespace, deployment("small-model", gpus=1, node_selector=selector))
    pod = wait_for("a scheduled pod", lambda: scheduled_pod(cluster, namespace, "small-model"))
    assert pod["spec"]["nodeName"] == "gpu-1x40"


def test_gpu_taint_keeps_pods_without_toleration_off_gpu_nodes(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, deployment("plain"))
    pod = wait_for("a ready pod", lambda: ready_pod(cluster, namespace, "plain"))
    assert pod["spec"]["nodeName"] == "cpu-0"


# ---------------------------------------------------------------------------------------------
# controllers


def test_garbage_collector_removes_dependents(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, config_map("owner"))
    owner_uid = get(cluster, namespace, "configmap", "owner")["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
        "stringData": {"k": "v"},
    }
    apply(cluster, namespace, dependent)
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")
    wait_for(
        "the garbage collector to delete the dependent",
        lambda: try_get(cluster, namespace, "secret", "dependent") is None,
    )


def test_deleting_a_deployment_removes_its_replicasets_and_pods(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, deployment("web"))
    wait_for("a ready pod", lambda: ready_pod(cluster, namespace, "web"))
    assert get(cluster, namespace, "replicasets", "-l", "app=web")["items"]
    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--cascade=foreground")
    wait_for(
        "replicasets and pods to be collected",
        lambda: not get(cluster, namespace, "replicasets,pods", "-l", "app=web")["items"],
    )


def test_job_pod_completes_and_job_succeeds(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, job("download"))
    cluster.kubectl(
        "wait", "--for=condition=Complete", "job/download", "-n", namespace, "--timeout=90s"
    )
    finished = get(cluster, namespace, "job", "download")
    assert finished["status"]["succeeded"] == 1
    [pod] = pods(cluster, namespace, "app=download")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0


def test_failing_job_pod_fails_the_job(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, job("broken", annotations={OUTCOME: "fail"}))
    cluster.kubectl(
        "wait", "--for=condition=Failed", "job/broken", "-n", namespace, "--timeout=90s"
    )
    failed = condition(get(cluster, namespace, "job", "broken"), "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    [pod] = pods(cluster, namespace, "app=broken")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


@pytest.mark.parametrize(
    ("outcome", "waiting_reason", "last_reason"),
    [("crashloop", "CrashLoopBackOff", "Error"), ("oomkilled", "CrashLoopBackOff", "OOMKilled")],
)
def test_pod_outcome_annotations(
    cluster: Cluster, namespace: str, outcome: str, waiting_reason: str, last_reason: str
) -> None:
    pod_manifest: Json = {"apiVersion": "v1", "kind": "Pod"}
    pod_manifest |= pod_template(outcome, annotations={OUTCOME: outcome})
    pod_manifest["metadata"]["name"] = outcome
    apply(cluster, namespace, pod_manifest)

    def crashed() -> Json | None:
        status = get(cluster, namespace, "pod", outcome)["status"]
        statuses = status.get("containerStatuses") or [{}]
        return statuses[0] if "lastState" in statuses[0] and statuses[0]["lastState"] else None

    container = wait_for(f"the {outcome} outcome", crashed)
    assert container["state"]["waiting"]["reason"] == waiting_reason
    assert container["lastState"]["terminated"]["reason"] == last_reason
    assert container["restartCount"] > 0
    assert container["ready"] is False
    assert not is_ready(get(cluster, namespace, "pod", outcome))


# ---------------------------------------------------------------------------------------------
# API machinery


def test_server_side_apply_tracks_field_managers(cluster: Cluster, namespace: str) -> None:
    def server_side(manager: str, value: str, *extra: str) -> Any:
        return cluster.kubectl(
            "apply", "-n", namespace, "--server-side", f"--field-manager={manager}", *extra,
            "-f", "-", input=yaml.safe_dump(config_map("shared", {"mode": value})), check=False,
        )  # fmt: skip

    assert server_side("alice", "fast").returncode == 0
    managers = get(cluster, namespace, "configmap", "shared", "--show-managed-fields")
    fields = {m["manager"]: m for m in managers["metadata"]["managedFields"]}
    assert fields["alice"]["operation"] == "Apply"
    assert "f:mode" in json.dumps(fields["alice"]["fieldsV1"])

    conflict = server_side("bob", "safe")
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower()
    assert "alice" in conflict.stderr

    assert server_side("bob", "safe", "--force-conflicts").returncode == 0
    after = get(cluster, namespace, "configmap", "shared", "--show-managed-fields")
    assert after["data"]["mode"] == "safe"
    owners = {m["manager"] for m in after["metadata"]["managedFields"] if "f:mode" in json.dumps(m)}
    assert owners == {"bob"}


def test_rbac_denies_a_service_account_until_granted(cluster: Cluster, namespace: str) -> None:
    user = f"system:serviceaccount:{namespace}:default"
    denied = cluster.kubectl("get", "secrets", "-n", namespace, f"--as={user}", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "{user}" cannot list resource "secrets"' in denied.stderr

    cluster.kubectl(
        "create", "role", "read-secrets", "-n", namespace, "--verb=get,list", "--resource=secrets"
    )
    cluster.kubectl(
        "create", "rolebinding", "read-secrets", "-n", namespace, "--role=read-secrets",
        f"--serviceaccount={namespace}:default",
    )  # fmt: skip
    wait_for(
        "the role binding to take effect",
        lambda: succeeds(cluster, "get", "secrets", "-n", namespace, f"--as={user}"),
        timeout=30,
    )
    can_delete = cluster.kubectl(
        "auth", "can-i", "delete", "secrets", "-n", namespace, f"--as={user}", check=False
    )
    assert can_delete.stdout.strip() == "no"


def test_service_account_token_authenticates(cluster: Cluster, namespace: str) -> None:
    kubeconfig = cluster.service_account_kubeconfig(namespace, "default")
    as_sa = ["--kubeconfig", str(kubeconfig)]
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", *as_sa).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:default"
    denied = cluster.kubectl("get", "pods", "-n", namespace, *as_sa, check=False)
    assert "Forbidden" in denied.stderr


def claim(name: str, storage_class: str | None) -> Json:
    spec: Json = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "30Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


def bound_claim(cluster: Cluster, namespace: str, name: str) -> Json | None:
    found = get(cluster, namespace, "pvc", name)
    return found if found["status"].get("phase") == "Bound" else None


def test_pvc_of_the_default_class_binds_and_unknown_class_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, claim("weights", None), claim("orphan", "no-such-class"))
    bound = wait_for("the claim to be Bound", lambda: bound_claim(cluster, namespace, "weights"))
    assert bound["spec"]["storageClassName"] == "standard"  # set by DefaultStorageClass admission
    volume = get(cluster, None, "pv", bound["spec"]["volumeName"])
    assert volume["spec"]["capacity"]["storage"] == "30Gi"
    assert volume["spec"]["claimRef"]["name"] == "weights"
    assert bound["status"]["capacity"]["storage"] == "30Gi"

    time.sleep(2)
    assert get(cluster, namespace, "pvc", "orphan")["status"]["phase"] == "Pending"

    cluster.kubectl("delete", "pvc", "weights", "-n", namespace)
    wait_for(
        "the released volume to be deleted",
        lambda: not succeeds(cluster, "get", "pv", volume["metadata"]["name"]),
    )


# ---------------------------------------------------------------------------------------------
# tools


def test_helm_installs_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    version = cluster.helm("version", "--short").stdout
    assert version.startswith("v3.")
    cluster.helm("create", str(tmp_path / "demo"))
    cluster.helm("lint", str(tmp_path / "demo"))
    cluster.helm(
        "install", "demo", str(tmp_path / "demo"), "-n", namespace, "--wait", "--timeout=120s"
    )
    status = json.loads(cluster.helm("status", "demo", "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deployed = get(cluster, namespace, "deployment", "demo")
    assert deployed["status"]["availableReplicas"] == 1
