"""Any spec the pydantic model accepts renders valid objects or yields a planner error."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy.api import ModelDeploymentSpec, PlanError
from modeldeploy.catalog import builtin_catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import make_plan
from modeldeploy.render import render
from support import KUBERNETES_VERSION

CATALOG = builtin_catalog()
CONFIG = OperatorConfig()

names = st.sampled_from([*CATALOG.families, "deepseek-v3", "unknown-model"])
sizes = st.one_of(
    st.sampled_from(sorted({s.sizeInBillions for f in CATALOG.families.values()
                            for s in f.specs})),
    st.floats(min_value=0.1, max_value=2000, allow_nan=False))
quantizations = st.sampled_from(["none", "4-bit", "8-bit", "Int4", "Int8", "FP8", "fp8", "q4"])
label_values = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?\Z")

specs = st.fixed_dictionaries(
    {"model": names, "sizeInBillions": sizes},
    optional={
        "format": st.sampled_from(["pytorch", "gptq", "awq", "fp8"]),
        "quantization": quantizations,
        "engine": st.sampled_from(["vllm", "sglang", "transformers"]),
        "replicas": st.integers(0, 5),
        "hub": st.sampled_from(["huggingface", "modelscope"]),
        "revision": st.from_regex(r"\A[a-f0-9]{6,40}\Z"),
        "gpu": st.fixed_dictionaries({}, optional={
            "count": st.integers(1, 16),
            "memoryGiB": st.sampled_from([16, 24, 40, 48, 80, 96, 141, 192]),
            "nodeSelector": st.dictionaries(st.sampled_from(["gpu", "zone"]), label_values,
                                            max_size=2),
        }),
        "cache": st.fixed_dictionaries({}, optional={
            "size": st.sampled_from(["10Gi", "1Ti", "500G"]),
            "storageClassName": st.sampled_from(["standard", "fast-ssd"]),
            "accessMode": st.sampled_from(["ReadWriteOnce", "ReadWriteMany"]),
            "retainPolicy": st.sampled_from(["Delete", "Retain"]),
        }),
        "maxModelLen": st.integers(128, 300_000),
        "engineArgs": st.lists(st.sampled_from(["--enforce-eager", "--port", "--seed=1",
                                                "--tp", "--max-model-len=4"]), max_size=3),
        "env": st.lists(st.fixed_dictionaries({"name": st.from_regex(r"\A[A-Z]{1,8}\Z"),
                                               "value": st.text(max_size=10)}),
                        max_size=3, unique_by=lambda e: e["name"]),
        "port": st.integers(1, 65535),
        "hubTokenSecretRef": st.fixed_dictionaries(
            {"name": st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")}),
        "podLabels": st.dictionaries(st.sampled_from(["team", "tier"]), label_values,
                                     max_size=2),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=specs, cache_complete=st.booleans())
def test_any_accepted_spec_renders_valid_objects_or_a_plan_error(
        raw: dict[str, Any], cache_complete: bool) -> None:
    spec = ModelDeploymentSpec.model_validate(raw)
    try:
        plan = make_plan("md", "ns", spec, CATALOG, CONFIG)
    except PlanError as err:
        assert err.reason and err.message
        return
    for obj in render(plan, cache_complete=cache_complete):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_catalog_row_plans_or_refuses_clearly() -> None:
    planned = refused = 0
    for family in CATALOG.families.values():
        for cat_spec in family.specs:
            for quant in cat_spec.quantizations:
                for engine in CATALOG.engines_allowed(family, cat_spec, quant):
                    spec = ModelDeploymentSpec(model=family.name,
                                               sizeInBillions=cat_spec.sizeInBillions,
                                               format=cat_spec.format, quantization=quant,
                                               engine=engine)
                    try:
                        plan = make_plan("md", "ns", spec, CATALOG, CONFIG)
                    except PlanError as err:
                        assert "a node holds at most" in err.message
                        refused += 1
                        continue
                    for obj in render(plan):
                        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                    planned += 1
    assert planned > 100 and refused < planned / 10
