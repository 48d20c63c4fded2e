"""What the API server refuses at admission, from the CRD schema alone: each hostile spec is
refused with a sentence that says what is allowed, and nothing is stored; the edge cases that
are valid get in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness import Cluster
from helpers import MD, get, lite

LONG = "a" * 64

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("label-key-space", {"podLabels": {"a b": "x"}}, "podLabels keys must be qualified names"),
    ("label-key-two-slashes", {"podLabels": {"a/b/c": "x"}}, "podLabels keys must be"),
    ("label-key-long-name", {"podLabels": {f"example.com/{LONG}": "x"}}, "podLabels keys"),
    ("label-key-long-prefix", {"podLabels": {"a" * 254 + "/b": "x"}}, "podLabels keys"),
    ("label-value-slash", {"podLabels": {"team": "a/b"}}, "spec.podLabels.team"),
    ("label-value-long", {"podLabels": {"team": LONG}}, "spec.podLabels.team"),
    ("label-value-dash-end", {"podLabels": {"team": "a-"}}, "spec.podLabels.team"),
    ("annotation-key", {"podAnnotations": {"not ok": "x"}}, "podAnnotations keys must be"),
    ("node-selector-key", {"gpu": {"nodeSelector": {"-bad": "x"}}},
     "gpu.nodeSelector keys must be qualified names"),
    ("node-selector-value", {"gpu": {"nodeSelector": {"gpu": "a b"}}},
     "spec.gpu.nodeSelector.gpu"),
    ("cache-size-dots", {"cache": {"size": "1.2.3"}}, "spec.cache.size"),
    ("cache-size-exponent", {"cache": {"size": "1e3"}}, "spec.cache.size"),
    ("cache-size-negative", {"cache": {"size": "-1Gi"}}, "spec.cache.size"),
    ("cache-size-milli", {"cache": {"size": "100m"}}, "spec.cache.size"),
    ("memory-dots", {"resources": {"limits": {"memory": "1.2.3Gi"}}},
     "must be a Kubernetes quantity"),
    ("cpu-negative", {"resources": {"requests": {"cpu": "-2"}}}, "must be a Kubernetes quantity"),
    ("cpu-negative-number", {"resources": {"requests": {"cpu": -2}}},
     "must be a Kubernetes quantity"),
    ("cpu-fraction-number", {"resources": {"requests": {"cpu": 0.5}}},
     "spec.resources.requests.cpu"),
    ("secret-key", {"hubTokenSecretRef": {"name": "hf", "key": "a b!"}},
     "spec.hubTokenSecretRef.key"),
    ("secret-key-dots", {"hubTokenSecretRef": {"name": "hf", "key": ".."}},
     "a Secret key must not be '.' or start with '..'"),
    ("secret-name", {"hubTokenSecretRef": {"name": "HF_Token"}}, "spec.hubTokenSecretRef.name"),
    ("configmap-key", {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
        "name": "c", "key": "x/y"}}}]}, "key"),
    ("resource-name-cpu", {"gpu": {"resourceName": "cpu"}}, "spec.gpu.resourceName"),
    ("resource-name-native", {"gpu": {"resourceName": "kubernetes.io/gpu"}},
     "gpu.resourceName must be an extended resource"),
    ("resource-name-native-sub", {"gpu": {"resourceName": "x.kubernetes.io/gpu"}},
     "gpu.resourceName must be an extended resource"),
    ("storage-class", {"cache": {"storageClassName": "Fast SSD"}},
     "spec.cache.storageClassName"),
    ("image-space", {"image": "vllm/vllm-openai:v1 --evil"}, "spec.image"),
    ("toleration-exists-value", {"gpu": {"tolerations": [
        {"key": "k", "operator": "Exists", "value": "v"}]}},
     "a toleration with operator Exists takes no value"),
    ("toleration-seconds", {"gpu": {"tolerations": [
        {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}},
     "tolerationSeconds needs effect NoExecute"),
    ("toleration-no-key", {"gpu": {"tolerations": [{"value": "v"}]}},
     "a toleration without a key must have operator Exists"),
    ("too-many-labels", {"podLabels": {f"k{i}": "v" for i in range(65)}},
     "spec.podLabels"),
]

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("labels", {"podLabels": {"example.com/team": "ml", "tier": "", "a.b_c-d": "X.y_z-1"}}),
    ("quantities", {"cache": {"size": "40Gi"}, "resources": {
        "requests": {"cpu": "500m", "memory": "1.5Gi"}, "limits": {"memory": "64e9"}}}),
    ("whole-number-cpu", {"resources": {"requests": {"cpu": 4}, "limits": {"cpu": 8}}}),
    ("secret-key", {"hubTokenSecretRef": {"name": "hf.tokens", "key": "hf_token.v1-a"}}),
    ("gpu", {"gpu": {"resourceName": "amd.com/gpu", "nodeSelector": {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "tolerations": [
        {"operator": "Exists"}, {"key": "k", "effect": "NoExecute", "tolerationSeconds": 30}]}}),
]


def _apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    # JSON, so that "64e9" stays a string
    return cluster.kubectl("apply", "-n", namespace, "-f", "-",
                           input=json.dumps(lite(name, **spec)), check=False)


def test_hostile_specs_are_refused_at_admission(cluster: Cluster, namespace: str,
                                                crd: None) -> None:
    wrong = []
    for case, spec, said in REFUSED:
        result = _apply(cluster, namespace, case, spec)
        if result.returncode == 0 or said not in result.stderr:
            wrong.append(f"{case}: rc {result.returncode}: {result.stderr.strip()[:300]}")
        elif get(cluster, MD, namespace, case) is not None:
            wrong.append(f"{case}: refused, yet stored")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("case", "spec"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
def test_valid_edge_cases_get_in(cluster: Cluster, namespace: str, crd: None, case: str,
                                 spec: dict[str, Any]) -> None:
    result = _apply(cluster, namespace, case, spec)
    assert result.returncode == 0, result.stderr
