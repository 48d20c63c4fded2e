"""The committed CRD is what api.py generates, and it is a valid, structural CRD."""

from __future__ import annotations

import kubernetes_validate
import yaml

from modeldeploy.api.crd import crd, crd_yaml
from support import KUBERNETES_VERSION, ROOT

CRD_FILE = ROOT / "crds" / "modeldeploy.dev_modeldeployments.yaml"


def test_committed_crd_matches_api_models() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "crds/ drifted from operator/modeldeploy/api.py: run "
        "`modeldeploy crd > crds/modeldeploy.dev_modeldeployments.yaml`")


def test_crd_passes_the_kubernetes_schema() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), KUBERNETES_VERSION,
                                 strict=True)


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


def test_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if "properties" in node and path.split(".")[-1] != "properties":
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path


def test_printer_columns_and_names() -> None:
    spec = crd()["spec"]
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Model", "Size", "Engine", "GPUs"]
    assert "Phase" in columns and "Age" in columns
    assert "md" in spec["names"]["shortNames"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


def test_spec_defaults_and_rules_are_in_the_schema() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert props["format"]["default"] == "pytorch"
    assert props["quantization"]["default"] == "none"
    assert props["engine"]["enum"] == ["vllm", "sglang", "transformers"]
    assert props["env"]["x-kubernetes-list-type"] == "map"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("8-bit" in r for r in rules)
