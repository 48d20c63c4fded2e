"""The chart's gateway objects, rendered by the real helm: least-privilege RBAC (watch and
scale only), a locked-down pod, the settings as flags the gateway accepts."""

from __future__ import annotations

from typing import Any

from test_chart import (  # the chart tests' helm and helpers
    CHART,
    FULLNAME,
    NAMESPACE,
    Helm,
    _all,
    _one,
    _render,
    helm,
)

from modeldeploy.cli import _parser

Obj = dict[str, Any]
GATEWAY = f"{FULLNAME}-gateway"
GATEWAY_RULES = [
    {"apiGroups": ["modeldeploy.dev"], "resources": ["modeldeployments"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
]
__all__ = ["helm"]


def test_gateway_is_off_by_default(helm: Helm) -> None:
    assert not [o for o in _render(helm) if o["metadata"]["name"] == GATEWAY]


def test_cluster_wide_gateway(helm: Helm) -> None:
    objects = _render(helm, "--set", "gateway.enabled=true")
    assert _one(objects, "ClusterRole", GATEWAY)["rules"] == GATEWAY_RULES
    binding = _one(objects, "ClusterRoleBinding", GATEWAY)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATEWAY,
                                    "namespace": NAMESPACE}]
    deployment = _one(objects, "Deployment", GATEWAY, NAMESPACE)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == GATEWAY and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    args = _parser().parse_args(container["args"])
    assert args.command == "gateway" and args.namespace == [] and args.api_keys_file is None
    assert args.port == 8000 and args.metrics_port == 9090
    assert args.peers_service == f"{NAMESPACE}/{GATEWAY}"  # the ClusterRole covers its slices
    assert not [o for o in _all(objects, "Role") if o["metadata"]["name"].startswith(GATEWAY)]
    # no selector of the operator's objects picks the gateway's pods
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        for obj in _all(objects, kind):
            if obj["metadata"]["name"].startswith(GATEWAY):
                continue
            selector = obj["spec"].get("selector") or obj["spec"].get("podSelector") or {}
            selector = selector.get("matchLabels", selector)
            assert not selector.items() <= labels.items(), obj["metadata"]["name"]
    service = _one(objects, "Service", GATEWAY)
    assert service["spec"]["selector"].items() <= labels.items()


def test_namespaced_gateway_with_keys(helm: Helm) -> None:
    objects = _render(helm, "-f", str(CHART / "ci" / "gateway-values.yaml"))
    assert not [o for o in _all(objects, "ClusterRole") if o["metadata"]["name"] == GATEWAY]
    for namespace in ("team-a", "team-b"):
        assert _one(objects, "Role", GATEWAY, namespace)["rules"] == GATEWAY_RULES
        assert _one(objects, "RoleBinding", GATEWAY, namespace)["roleRef"]["kind"] == "Role"
    pod = _one(objects, "Deployment", GATEWAY)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = _parser().parse_args(container["args"])
    assert args.namespace == ["team-a", "team-b"] and args.no_autoscale
    assert args.prefix_affinity_chars == 256
    assert str(args.api_keys_file) == "/etc/modeldeploy-gateway/keys/keys.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "gateway-keys"


def test_gateway_values_are_checked(helm: Helm) -> None:
    from test_chart import _helm

    result = _helm(helm, "template", "md", str(CHART), "--set", "gateway.retries=-1")
    assert result.returncode != 0 and "retries" in result.stderr
    result = _helm(helm, "template", "md", str(CHART), "--set", "gateway.typo=1")
    assert result.returncode != 0 and "typo" in result.stderr


def test_namespaced_autoscaling_gateway_may_count_its_peers(helm: Helm) -> None:
    objects = _render(helm, "--set", "gateway.enabled=true", "--set",
                      "gateway.namespaces={team-a}")
    peers = _one(objects, "Role", f"{GATEWAY}-peers", NAMESPACE)
    assert peers["rules"] == [{"apiGroups": ["discovery.k8s.io"],
                               "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
    binding = _one(objects, "RoleBinding", f"{GATEWAY}-peers", NAMESPACE)
    assert binding["subjects"][0]["name"] == GATEWAY
