"""The Helm chart installed into the real control plane, and the operator running with exactly
the chart's permissions.

`helm install` (the real helm) puts the chart into a namespace that enforces the `restricted`
Pod Security Standard, so the API server's own PodSecurity admission judges the operator pod.
The operator then runs here as a process whose kubeconfig carries a token of the chart's
ServiceAccount (TokenRequest), so every request it makes is authorized by the chart's RBAC and
nothing else: reconciling an example to `Available` proves the RBAC is enough, and the same with
one verb taken out of the chart's Role proves each verb counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from helpers import condition, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "modeldeploy"
NAMESPACED_VALUES = CHART / "ci" / "namespaced-values.yaml"
EXAMPLE = ROOT / "examples" / "deepseek-v2-lite.yaml"
EXAMPLE_NAME = "deepseek-v2-lite"
CRD_NAME = "modeldeployments.modeldeploy.dev"
RELEASE = "md"
FULLNAME = "md-modeldeploy"  # the chart's full name for release "md"

# What the chart must let the operator do in a watched namespace, and must not.
ALLOWED = [
    ("get", "modeldeployments.modeldeploy.dev"),
    ("watch", "modeldeployments.modeldeploy.dev"),
    ("patch", "modeldeployments.modeldeploy.dev/status"),
    ("update", "modeldeployments.modeldeploy.dev/status"),
    ("create", "persistentvolumeclaims"),
    ("delete", "persistentvolumeclaims"),
    ("create", "jobs.batch"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("update", "deployments.apps"),
    ("create", "services"),
    ("update", "services"),
    ("list", "pods"),
    ("create", "events"),
    ("create", "serviceaccounts"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]
DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("create", "pods"),
    ("delete", "pods"),
    ("update", "modeldeployments.modeldeploy.dev"),
    ("patch", "pods/status"),
    ("create", "modeldeployments.modeldeploy.dev"),
    ("delete", "modeldeployments.modeldeploy.dev"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("create", "clusterpeerings.kopf.dev"),
]


# ---------------------------------------------------------------------------------------------
# helpers


def _get(cluster: Cluster, kind: str, name: str, namespace: str | None = None
         ) -> dict[str, Any] | None:
    where = ["-n", namespace] if namespace else []
    found = cluster.kubectl("get", kind, name, *where, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(found.stdout)
    return obj


def _create_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("create", "namespace", name)
    wait_for(f"the default ServiceAccount of {name}",
              lambda: cluster.kubectl("get", "sa", "default", "-n", name,
                                      check=False).returncode == 0, timeout=30)


def _delete_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--force", "--grace-period=0",
                    "--wait=false", check=False)


def _restricted(cluster: Cluster, namespace: str) -> None:
    """The API server's PodSecurity admission rejects any pod here that is not `restricted`."""
    cluster.kubectl("label", "namespace", namespace, "--overwrite",
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")


def _adopt_crd(cluster: Cluster, release: str, namespace: str) -> None:
    """A CRD applied earlier with kubectl (e.g. by another test) is handed to the release the
    way Helm documents for adopting existing objects; its content is the same."""
    crd = _get(cluster, "crd", CRD_NAME)
    if crd is None:
        return
    cluster.kubectl("label", "crd", CRD_NAME, "--overwrite", "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "crd", CRD_NAME, "--overwrite",
                    f"meta.helm.sh/release-name={release}",
                    f"meta.helm.sh/release-namespace={namespace}")


def _helm_install(cluster: Cluster, namespace: str, *args: str) -> None:
    cluster.helm("install", RELEASE, str(CHART), "--namespace", namespace,
                 "--wait", "--timeout", "90s", *args)


def _helm_uninstall(cluster: Cluster, namespace: str) -> None:
    cluster.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s",
                 check=False)


def _operator_pod_running(cluster: Cluster, namespace: str) -> None:
    """The Deployment's pod was admitted under `restricted` and runs (kwok plays the kubelet)."""
    pods = json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "json",
        "-l", f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=modeldeploy",
    ).stdout)["items"]
    assert len(pods) == 1, pods
    pod = pods[0]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    assert pod["spec"]["automountServiceAccountToken"] is False
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts


def _can(cluster: Cluster, sa_namespace: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the chart's ServiceAccount; RESOURCE may name a subresource."""
    resource, _, subresource = resource.partition("/")
    sub = [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl("auth", "can-i", verb, resource, *sub, "-n", namespace,
                             f"--as=system:serviceaccount:{sa_namespace}:{FULLNAME}",
                             check=False)
    return result.stdout.strip() == "yes"


class Operator:
    """`modeldeploy run` as the chart's ServiceAccount, with the chart's ConfigMap as config."""

    def __init__(self, cluster: Cluster, workdir: Path, release_namespace: str,
                 watch: list[str]) -> None:
        self.workdir = workdir
        self.kubeconfig = cluster.service_account_kubeconfig(release_namespace, FULLNAME)
        config = cluster.kubectl("get", "configmap", FULLNAME, "-n", release_namespace,
                                 "-o", "jsonpath={.data.config\\.yaml}").stdout
        assert yaml.safe_load(config)["images"], config
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(config)
        self.log_path = workdir / "operator.log"
        self.health_port, self.metrics_port = free_port(), free_port()
        self.argv = [sys.executable, "-m", "modeldeploy.cli", "run",
                     *[f"--namespace={ns}" for ns in watch],
                     f"--config={self.config_path}",
                     f"--metrics-port={self.metrics_port}",
                     f"--health-port={self.health_port}"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Operator:
        # Only the ServiceAccount's kubeconfig: nothing of the admin's leaks into the process.
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.workdir,
                                            start_new_session=True)
        # The endpoints the chart's probes and metrics Service point at.
        wait_for("the operator's /healthz", lambda: self._http_ok("/healthz", self.health_port),
                  timeout=60)
        assert self._http_ok("/metrics", self.metrics_port)
        return self

    def _http_ok(self, path: str, port: int) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _apply_example(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))


def _wait_available(cluster: Cluster, namespace: str, operator: Operator) -> None:
    waited = cluster.kubectl("wait", "--for=condition=Available", "--timeout=120s", "-n",
                             namespace, f"modeldeployment/{EXAMPLE_NAME}", check=False)
    md = _get(cluster, "modeldeployment", EXAMPLE_NAME, namespace)
    assert waited.returncode == 0, (
        f"not Available: {waited.stderr}\nstatus: {json.dumps((md or {}).get('status'))}\n"
        f"operator log:\n{operator.log()[-4000:]}")


def _assert_no_denials(operator: Operator) -> None:
    """Enough RBAC means not a single refused request along the way."""
    denied = [line for line in operator.log().splitlines()
              if "forbidden" in line.lower() or " 403" in line]
    assert not denied, "requests the chart's RBAC refused:\n" + "\n".join(denied[:5])


@pytest.fixture
def release_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    """The test's fresh namespace, enforcing `restricted`, with the release uninstalled after."""
    _restricted(cluster, namespace)
    try:
        yield namespace
    finally:
        _helm_uninstall(cluster, namespace)


@pytest.fixture
def workload_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A second fresh namespace where the ModelDeployment lives (watched by the operator)."""
    name = f"{namespace[:50]}-llm"
    _create_namespace(cluster, name)
    try:
        yield name
    finally:
        _delete_namespace(cluster, name)


# ---------------------------------------------------------------------------------------------
# tests


def test_cluster_wide_install_with_crd_reconciles_as_the_chart_service_account(
        cluster: Cluster, release_namespace: str, workload_namespace: str,
        tmp_path: Path) -> None:
    _adopt_crd(cluster, RELEASE, release_namespace)
    _helm_install(cluster, release_namespace, "--set", "crds.enabled=true",
                  "--set", "crds.keep=true")

    crd = _get(cluster, "crd", CRD_NAME)
    assert crd is not None
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert condition(crd, "Established").get("status") == "True"
    for kind, name in [("serviceaccount", FULLNAME), ("configmap", FULLNAME),
                       ("deployment", FULLNAME), ("service", f"{FULLNAME}-metrics"),
                       ("networkpolicy", FULLNAME)]:
        assert _get(cluster, kind, name, release_namespace) is not None, (kind, name)
    for kind in ("clusterrole", "clusterrolebinding"):
        assert _get(cluster, kind, FULLNAME) is not None, kind
    _operator_pod_running(cluster, release_namespace)

    # cluster-wide: the ClusterRole covers any namespace, and only what the operator uses
    for verb, resource in ALLOWED:
        assert _can(cluster, release_namespace, verb, resource, workload_namespace), \
            (verb, resource)
    for verb, resource in DENIED:
        assert not _can(cluster, release_namespace, verb, resource, workload_namespace), \
            (verb, resource)

    with Operator(cluster, tmp_path, release_namespace, watch=[]) as operator:
        _apply_example(cluster, workload_namespace)
        _wait_available(cluster, workload_namespace, operator)
        _assert_no_denials(operator)
        md = _get(cluster, "modeldeployment", EXAMPLE_NAME, workload_namespace)
        assert md is not None and md["status"]["phase"] == "Ready"

    # crds.keep: uninstalling the release leaves the CRD (and every ModelDeployment) in place
    _helm_uninstall(cluster, release_namespace)
    assert _get(cluster, "crd", CRD_NAME) is not None
    assert _get(cluster, "clusterrole", FULLNAME) is None


def _install_namespaced(cluster: Cluster, release_namespace: str, watched: str) -> None:
    if _get(cluster, "crd", CRD_NAME) is None:  # this test alone: the CRD from crds/
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/{CRD_NAME}")
    # The chart's namespaced CI values, with the watched namespace of this test.
    values = yaml.safe_load(NAMESPACED_VALUES.read_text())
    assert values["watchNamespaces"], "ci/namespaced-values.yaml lists namespaces"
    _helm_install(cluster, release_namespace, "-f", str(NAMESPACED_VALUES),
                  "--set", "crds.enabled=false", "--set-json",
                  f"watchNamespaces={json.dumps([watched])}")


def test_namespaced_install_reconciles_as_the_chart_service_account(
        cluster: Cluster, release_namespace: str, workload_namespace: str,
        tmp_path: Path) -> None:
    _install_namespaced(cluster, release_namespace, workload_namespace)

    assert _get(cluster, "role", FULLNAME, workload_namespace) is not None
    assert _get(cluster, "rolebinding", FULLNAME, workload_namespace) is not None
    cluster_role = _get(cluster, "clusterrole", FULLNAME)
    assert cluster_role is not None
    assert {r["resources"][0] for r in cluster_role["rules"]} == {
        "customresourcedefinitions", "namespaces"}
    _operator_pod_running(cluster, release_namespace)

    # namespaced: allowed in the watched namespace, nowhere else (not even its own namespace)
    for verb, resource in ALLOWED:
        assert _can(cluster, release_namespace, verb, resource, workload_namespace), \
            (verb, resource)
        assert not _can(cluster, release_namespace, verb, resource, release_namespace), \
            (verb, resource)
    for verb, resource in DENIED:
        assert not _can(cluster, release_namespace, verb, resource, workload_namespace), \
            (verb, resource)

    with Operator(cluster, tmp_path, release_namespace, watch=[workload_namespace]) as operator:
        _apply_example(cluster, workload_namespace)
        _wait_available(cluster, workload_namespace, operator)
        _assert_no_denials(operator)


def _remove_verb(cluster: Cluster, namespace: str, api_group: str, resource: str,
                 verb: str) -> None:
    """Patches the installed Role: the chart's rules with one verb taken out."""
    role = _get(cluster, "role", FULLNAME, namespace)
    assert role is not None
    removed = False
    for rule in role["rules"]:
        if api_group in rule["apiGroups"] and resource in rule["resources"] and \
                verb in rule["verbs"]:
            rule["verbs"].remove(verb)
            removed = True
    assert removed, f"the chart's Role grants no {verb} on {resource}"
    role["metadata"] = {"name": FULLNAME, "namespace": namespace}
    cluster.kubectl("replace", "-f", "-", input=json.dumps(role))


def test_one_verb_removed_breaks_reconcile(cluster: Cluster, release_namespace: str,
                                          workload_namespace: str, tmp_path: Path) -> None:
    _install_namespaced(cluster, release_namespace, workload_namespace)
    _remove_verb(cluster, workload_namespace, "apps", "deployments", "create")
    assert not _can(cluster, release_namespace, "create", "deployments.apps",
                    workload_namespace)

    with Operator(cluster, tmp_path, release_namespace, watch=[workload_namespace]) as operator:
        _apply_example(cluster, workload_namespace)

        def refused() -> dict[str, Any] | None:
            md = _get(cluster, "modeldeployment", EXAMPLE_NAME, workload_namespace)
            degraded = condition(md, "Degraded")
            if degraded.get("reason") == "ApplyFailed" and \
                    "forbidden" in (degraded.get("message") or "").lower():
                return md
            return None

        # Everything up to the serving Deployment works (the cache claim is made and its
        # download Job completes), then the API server refuses to create the Deployment and the
        # operator says so in status, events and log.
        md = wait_for("the refused Deployment in the ModelDeployment's status", refused,
                       timeout=90)
        degraded = condition(md, "Degraded")
        assert degraded["status"] == "True", degraded
        assert degraded["message"].startswith(
            f"the API server refused the write of Deployment {EXAMPLE_NAME}: "), degraded
        assert "deployments" in degraded["message"], degraded
        assert condition(md, "Available").get("status") == "False", md
        jobs = json.loads(cluster.kubectl("get", "jobs", "-n", workload_namespace,
                                          "-o", "json").stdout)["items"]
        assert any(condition(job, "Complete").get("status") == "True" for job in jobs), jobs
        claims = json.loads(cluster.kubectl("get", "pvc", "-n", workload_namespace,
                                            "-o", "json").stdout)["items"]
        assert len(claims) == 1, claims
        assert _get(cluster, "deployment", EXAMPLE_NAME, workload_namespace) is None
        assert "forbidden" in operator.log().lower()
        events = json.loads(cluster.kubectl(
            "get", "events", "-n", workload_namespace, "-o", "json",
            "--field-selector", f"involvedObject.name={EXAMPLE_NAME}").stdout)["items"]
        assert any("forbidden" in (e.get("message") or "").lower() for e in events), events

        # and it stays that way: never Available while the verb is missing
        time.sleep(5)
        md = _get(cluster, "modeldeployment", EXAMPLE_NAME, workload_namespace)
        assert condition(md, "Available").get("status") != "True", md
