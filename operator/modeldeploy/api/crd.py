"""Generate the ModelDeployment CRD from the pydantic models in ``api.py``.

Pydantic emits JSON Schema (2020-12 flavour, with ``$ref`` and ``anyOf`` for optional
fields); Kubernetes wants a *structural* OpenAPI v3 schema: everything inlined, one type
per node, no nulls. This module does that translation and adds what only the CRD can say
(printer columns, list semantics, the status subresource).
"""

from __future__ import annotations

from typing import Any

import yaml

from .. import GROUP, KIND, PLURAL, VERSION
from .spec import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    NAME_RULE_MESSAGE,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)

_DROPPED_KEYS = {"title", "$defs"}

# Kubernetes list semantics for lists of objects, by (model title, field).
_LIST_MAP_KEYS = {
    "conditions": ["type"],
    "env": ["name"],
}

PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Size", "type": "number", "jsonPath": ".spec.sizeInBillions",
     "description": "Size in billions of parameters"},
    {"name": "Engine", "type": "string", "jsonPath": ".status.resolved.engine"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.resolved.gpusPerReplica",
     "description": "GPUs per replica"},
    {"name": "Split", "type": "string", "jsonPath": ".status.resolved.split", "priority": 1,
     "description": "How a replica larger than one node is split (nodes x GPUs, TP x PP)"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "priority": 1},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Download", "type": "integer", "jsonPath": ".status.download.percent",
     "description": "Percent of the weights downloaded, while the download runs"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# The ModelDeployment's name becomes a Service name, which must be a DNS-1035 label.
NAME_RULE = {
    "rule": f"self.metadata.name.matches('{NAME_PATTERN}') && "
            f"size(self.metadata.name) <= {NAME_MAX_LENGTH}",
    "message": NAME_RULE_MESSAGE,
}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-Schema node into a structural OpenAPI v3 node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        return structural(_drop_null_branch(schema), defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas forbid it; the API server prunes or rejects unknowns
        if key == "propertyNames":
            continue  # not in a structural schema: the model's keys rule says it in CEL
        if key == "patternProperties":
            # a map with a key pattern: the values' schema (the keys' rule is a CEL rule)
            (values,) = value.values()
            out["additionalProperties"] = structural(values, defs)
        elif key == "properties":
            out[key] = {name: _property(name, sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and \
            "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _drop_null_branch(schema: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
    if len(branches) != 1:
        raise ValueError(f"cannot express a union in a structural schema: {schema}")
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**branches[0], **rest}


def _property(name: str, schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = structural(schema, defs)
    if name in _LIST_MAP_KEYS and node.get("type") == "array":
        node["x-kubernetes-list-type"] = "map"
        node["x-kubernetes-list-map-keys"] = _LIST_MAP_KEYS[name]
        for key in _LIST_MAP_KEYS[name]:
            node["items"].setdefault("required", [])
            if key not in node["items"]["required"]:
                node["items"]["required"].append(key)
    return node


def model_schema(model: type[ModelDeploymentSpec] | type[ModelDeploymentStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    return structural(raw, raw.get("$defs", {}))


def openapi_schema() -> dict[str, Any]:
    spec = model_schema(ModelDeploymentSpec)
    spec["description"] = ModelDeploymentSpec.__doc__
    status = model_schema(ModelDeploymentStatus)
    return {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-validations": [NAME_RULE],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["md", "mdep"],
                "categories": ["modeldeploy"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    header = ("# Generated by `modeldeploy crd` from operator/modeldeploy/api/spec.py. "
              "Do not edit.\n")
    return header + yaml.dump(crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)
