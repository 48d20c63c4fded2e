"""The Helm chart, rendered and linted by the real helm.

Every rendered object passes the official Kubernetes schemas; the values schema refuses typos
and wrong types; checkov (offline) finds nothing beyond the skips the chart's README justifies;
the ConfigMap is a file the operator accepts; the CRD is the generated one; the RBAC is exactly
the rules the operator uses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modeldeploy.api.crd import crd, crd_yaml
from modeldeploy.config import OperatorConfig
from support import KUBERNETES_VERSION, ROOT

CHART = ROOT / "charts" / "modeldeploy"
CI_VALUES = {path.name.removesuffix("-values.yaml"): path
             for path in sorted((CHART / "ci").glob("*-values.yaml"))}
NAMESPACE = "modeldeploy-system"
RELEASE = "md"
FULLNAME = "md-modeldeploy"
CRD_COPY = CHART / "files" / "crds" / "modeldeploy.dev_modeldeployments.yaml"
KEEP = "helm.sh/resource-policy"

Obj = dict[str, Any]

# What the operator does in a watched namespace: exactly these verbs, nothing else.
NAMESPACED_RULES = [
    {"apiGroups": ["modeldeploy.dev"], "resources": ["modeldeployments"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["modeldeploy.dev"], "resources": ["modeldeployments/status"],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["services"],
     "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"],
     "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "list"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
# What the operator framework reads cluster-wide in either mode.
CLUSTER_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]
# Kinds the Kubernetes schemas do not know (validated by hand below).
NOT_BUILT_IN = {("monitoring.coreos.com/v1", "ServiceMonitor")}


# ---------------------------------------------------------------------------------------------
# helm


@dataclass(frozen=True)
class Helm:
    binary: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm from the control-plane build (a no-op once built), private homes."""
    build = subprocess.run([str(ROOT / "e2e" / "cluster" / "build")], capture_output=True,
                           text=True, check=False)
    assert build.returncode == 0 and build.stdout.strip(), build.stderr[-2000:]
    binary = Path(build.stdout.strip().splitlines()[-1]) / "helm"
    assert binary.is_file(), binary
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, **{var: str(home / var.lower()) for var in
                            ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
    return Helm(binary, env)


def _helm(helm: Helm, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm.binary), *args], capture_output=True, text=True,
                          env=helm.env, check=False)


def _render(helm: Helm, *args: str) -> list[Obj]:
    result = _helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[Obj]]:
    return {name: _render(helm, "-f", str(path)) for name, path in CI_VALUES.items()}


def _one(objects: list[Obj], kind: str, name: str | None = None,
         namespace: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)
             and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def _all(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


# ---------------------------------------------------------------------------------------------
# lint and schemas


def test_ci_values_files_exist() -> None:
    assert {"default", "namespaced"} <= set(CI_VALUES)


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_helm_lint_strict(helm: Helm, values: str) -> None:
    result = _helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                   "-f", str(CI_VALUES[values]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_rendered_objects_pass_the_kubernetes_schemas(rendered: dict[str, list[Obj]],
                                                      values: str) -> None:
    for obj in rendered[values]:
        if (obj["apiVersion"], obj["kind"]) in NOT_BUILT_IN:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_service_monitor(rendered: dict[str, list[Obj]]) -> None:
    assert not _all(rendered["default"], "ServiceMonitor")
    monitor = _one(rendered["features"], "ServiceMonitor")
    service = _one(rendered["features"], "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize(("args", "error"), [
    (["--set", "config.gpuMemoryGib=40"], "additional properties 'gpuMemoryGib' not allowed"),
    (["--set", "watchNamespace[0]=llm"], "additional properties 'watchNamespace' not allowed"),
    (["--set", "crds.kep=false"], "additional properties 'kep' not allowed"),
    (["--set-string", "config.maxGpusPerNode=eight"], "got string, want integer"),
    (["--set-string", "crds.enabled=yes"], "got string, want boolean"),
    (["--set-json", "config.usableGpuFraction=1.5"], "maximum"),
    (["--set", "config.cacheAccessMode=ReadWriteAll"], "cacheAccessMode"),
    (["--set", "watchNamespaces[0]=Not_A_Namespace"], "watchNamespaces"),
    (["--set", "containerSecurityContext.readOnlyRootFilesystem=false"], "must be true"),
    (["--set", "containerSecurityContext.allowPrivilegeEscalation=true"], "must be false"),
    (["--set", "podSecurityContext.runAsNonRoot=false"], "must be true"),
    (["--set", "containerSecurityContext.capabilities.add[0]=NET_ADMIN"], "maxItems"),
    (["--set", "catalog.configMaps[0]=Not_A_Name"], "/catalog/configMaps/0"),
])
def test_values_schema_refuses(helm: Helm, args: list[str], error: str) -> None:
    result = _helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert error in result.stderr, result.stderr


def test_values_schema_covers_every_operator_config_key() -> None:
    """A key added to OperatorConfig must reach the chart's values, schema and README."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    fields = set(OperatorConfig.model_fields)
    assert set(schema["properties"]["config"]["properties"]) == fields
    assert set(values["config"]) == fields
    # the values.yaml defaults are themselves a valid configuration
    OperatorConfig.model_validate(values["config"] | {"storageClassName": None})


# ---------------------------------------------------------------------------------------------
# what is rendered


def _config_file(objects: list[Obj]) -> Obj:
    configmap = _one(objects, "ConfigMap", FULLNAME)
    loaded: Obj = yaml.safe_load(configmap["data"]["config.yaml"])
    return loaded


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_configmap_is_a_valid_operator_config(rendered: dict[str, list[Obj]],
                                              values: str) -> None:
    config = OperatorConfig.model_validate(_config_file(rendered[values]))
    for engine in ("vllm", "sglang", "transformers", "transformers-vl2"):
        image = config.images[engine]
        assert re.fullmatch(r"[^:@\s]+(:[\w][\w.-]*)", image), image
        assert not image.endswith(":latest"), image
    assert re.search(r":\d+\.\d+\.\d+$", config.loaderImage)


def test_configmap_values_reach_the_config(rendered: dict[str, list[Obj]]) -> None:
    default = OperatorConfig.model_validate(_config_file(rendered["default"]))
    assert default.storageClassName is None  # "" means the cluster's default class
    assert default.gpuMemoryGiB == 80
    features = OperatorConfig.model_validate(_config_file(rendered["features"]))
    assert features.storageClassName == "fast-ssd"
    assert features.gpuMemoryGiB == 40


def test_operator_deployment_is_locked_down(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["default"]
    deployment = _one(objects, "Deployment", FULLNAME, NAMESPACE)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/modeldeploy/operator:0.1.0"
    assert container["args"][:4] == ["run", "--config=/etc/modeldeploy/config.yaml",
                                     "--metrics-port=8080", "--health-port=8081"]
    assert not [a for a in container["args"] if a.startswith("--namespace")]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["readOnly"] is True
    assert "/tmp" in mounts
    account = _one(objects, "ServiceAccount", FULLNAME, NAMESPACE)
    assert account["automountServiceAccountToken"] is False
    assert _one(objects, "Service", f"{FULLNAME}-metrics")["spec"]["ports"][0]["port"] == 8080
    policy = _one(objects, "NetworkPolicy", FULLNAME)
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]


def test_features_render(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["features"]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/modeldeploy/operator@sha256:" + "0" * 64
    assert "--catalog=/etc/modeldeploy/catalog" in container["args"]
    assert container["args"][-1] == "--log-level=debug"
    catalog = _one(objects, "ConfigMap", f"{FULLNAME}-catalog")
    assert "my-models.yaml" in catalog["data"]
    # an existing ConfigMap of catalog files (Xinference's llm_family.json.gz): its own mount
    assert "--catalog=/etc/modeldeploy/catalog-xinference-catalog" in container["args"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["catalog-0"] == {"name": "catalog-0", "readOnly": True,
                                   "mountPath": "/etc/modeldeploy/catalog-xinference-catalog"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["catalog-0"]["configMap"] == {"name": "xinference-catalog"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def _rbac(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(
        rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["default"]
    assert sorted(o["kind"] for o in _rbac(objects)) == ["ClusterRole", "ClusterRoleBinding"]
    role = _one(objects, "ClusterRole", FULLNAME)
    assert role["rules"] == CLUSTER_RULES + NAMESPACED_RULES
    binding = _one(objects, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                    "namespace": NAMESPACE}]


def test_namespaced_rbac_is_exactly_what_the_operator_uses(
        rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["namespaced"]
    watched = yaml.safe_load(CI_VALUES["namespaced"].read_text())["watchNamespaces"]
    assert len(watched) >= 2
    assert _one(objects, "ClusterRole", FULLNAME)["rules"] == CLUSTER_RULES
    for namespace in watched:
        assert _one(objects, "Role", FULLNAME, namespace)["rules"] == NAMESPACED_RULES
        binding = _one(objects, "RoleBinding", FULLNAME, namespace)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                        "namespace": NAMESPACE}]
    assert len(_all(objects, "Role")) == len(watched)
    args = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={ns}" for ns in watched]


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_rbac_grants_nothing_dangerous(rendered: dict[str, list[Obj]], values: str) -> None:
    for obj in _rbac(rendered[values]):
        for rule in obj.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (obj["metadata"]["name"], rule)
            assert not {"secrets", "pods/exec", "pods/log", "pods/attach", "pods/portforward",
                        "nodes/proxy", "serviceaccounts/token"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & \
                set(rule["verbs"]), rule
            assert "kopf.dev" not in rule["apiGroups"], rule
            if "rbac.authorization.k8s.io" in rule["apiGroups"]:
                # only a download Job's own Role and RoleBinding, in a namespace (get: what
                # holds the name when a create finds it taken)
                assert set(rule["resources"]) <= {"roles", "rolebindings"}, rule
                assert set(rule["verbs"]) <= {"get", "create", "patch", "delete"}, rule


def test_rbac_rules_live_in_one_template() -> None:
    templates = {p.name: p.read_text() for p in (CHART / "templates").iterdir()}
    with_verbs = [name for name, text in templates.items() if "verbs:" in text]
    assert with_verbs == ["_rbac.tpl"]


# ---------------------------------------------------------------------------------------------
# the CRD


def test_chart_crd_copy_matches_the_generated_crd() -> None:
    assert CRD_COPY.read_text() == crd_yaml(), (
        "charts/modeldeploy/files/crds/ drifted from `modeldeploy crd`: run `make chart-crd`")


def _without_chart_metadata(obj: Obj) -> Obj:
    plain: Obj = json.loads(json.dumps(obj))
    plain["metadata"].pop("labels", None)
    plain["metadata"].pop("annotations", None)
    return plain


def test_rendered_crd_is_the_generated_crd(helm: Helm,
                                           rendered: dict[str, list[Obj]]) -> None:
    rendered_crd = _one(rendered["default"], "CustomResourceDefinition")
    assert _without_chart_metadata(rendered_crd) == _without_chart_metadata(crd())
    assert rendered_crd["metadata"]["annotations"] == {KEEP: "keep"}
    not_kept = _one(_render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert KEEP not in (not_kept["metadata"].get("annotations") or {})
    assert not _all(_render(helm, "--set", "crds.enabled=false"), "CustomResourceDefinition")


# ---------------------------------------------------------------------------------------------
# security scan


def _checkov_skips() -> list[str]:
    config = yaml.safe_load((CHART / ".checkov.yaml").read_text())
    skips: list[str] = config.get("skip-check", [])
    return skips


def _checkov_command() -> list[str]:
    """$CHECKOV, else `checkov` on PATH, else the checkov module of this Python. It is best
    installed in an environment of its own: it pins old versions of packaging and networkx."""
    if os.environ.get("CHECKOV"):
        return [os.environ["CHECKOV"]]
    found = shutil.which("checkov")
    if found:
        return [found]
    if importlib.util.find_spec("checkov") is not None:
        return [sys.executable, "-m", "checkov.main"]
    pytest.fail("checkov is not installed (pip install checkov, ideally in its own virtual "
                "environment; or point $CHECKOV at its executable)")


def test_checkov_scan_of_the_rendered_chart_passes(rendered: dict[str, list[Obj]],
                                                   tmp_path: Path) -> None:
    for name, objects in rendered.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE",
           "LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [*_checkov_command(), "--directory", str(tmp_path),
         "--config-file", str(CHART / ".checkov.yaml"), "--skip-download", "--output", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert result.stdout.strip(), f"checkov produced no report (is it installed?):\n" \
                                  f"{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']}"
              for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 100, summary
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped <= set(_checkov_skips())


def test_every_checkov_skip_is_justified_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    skips = _checkov_skips()
    assert skips
    for check in skips:
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{check}`")]
        assert len(rows) == 1, f"{check}: no row in the README's table of skipped checks"
        reason = rows[0].split("|")[3].strip()
        assert len(reason) > 40, f"{check}: the README gives no real reason"


# ---------------------------------------------------------------------------------------------
# documentation


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        keys: list[str] = []
        for key, value in node.items():
            keys += _leaf_keys(value, f"{prefix}.{key}" if prefix else key)
        return keys
    return [prefix]


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    # a map of free-form entries (images, securityContexts, resources) is documented as a whole
    missing = [key for key in _leaf_keys(values)
               if not any(key == d or key.startswith(f"{d}.") for d in documented)]
    assert not missing, f"values missing from the README's table: {missing}"



# ---------------------------------------------------------------------------------------------
# images (no Docker here: what can be checked without building)


LWS_RULE = {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"]}


@pytest.mark.parametrize("mode", ["default", "namespaced"])
def test_leader_worker_set_rules_only_when_enabled(helm: Helm, rendered: dict[str, list[Obj]],
                                                   mode: str) -> None:
    kind = "ClusterRole" if mode == "default" else "Role"
    for role in _all(rendered[mode], kind):
        assert LWS_RULE not in role["rules"]
    enabled = _render(helm, "-f", str(CI_VALUES[mode]), "--set", "rbac.leaderWorkerSets=true")
    roles = _all(enabled, kind)
    assert roles and all(role["rules"] == [*role_rules(mode), LWS_RULE] for role in roles)


def role_rules(mode: str) -> list[Obj]:
    return CLUSTER_RULES + NAMESPACED_RULES if mode == "default" else NAMESPACED_RULES
