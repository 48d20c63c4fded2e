"""Every DeepSeek-VL2 size renders on vLLM by default, with its architecture override."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import make_plan
from modeldeploy.render import render
from support import FIXTURES, KUBERNETES_VERSION


@pytest.mark.parametrize(("size", "model_id", "gpus"), [
    (3, "deepseek-ai/deepseek-vl2-tiny", 1), (16, "deepseek-ai/deepseek-vl2-small", 1),
    (27, "deepseek-ai/deepseek-vl2", 2)])
def test_every_vl2_size_on_vllm(catalog: Catalog, config: OperatorConfig, size: int,
                                model_id: str, gpus: int) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "deepseek-vl2", "sizeInBillions": size})
    plan = make_plan("vl2", "llm", spec, catalog, config)
    assert (plan.engine.value, plan.model_id, plan.gpus) == ("vllm", model_id, gpus)
    objects = render(plan)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["vllm", "serve"]
    override = command[command.index("--hf-overrides") + 1]
    assert json.loads(override) == {"architectures": ["DeepseekVLV2ForCausalLM"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)


def test_imported_spec_renders_with_the_files_model_id(config: OperatorConfig) -> None:
    from modeldeploy.catalog import load_catalog

    catalog = load_catalog([FIXTURES / "xinference-quirks.json"])
    spec = ModelDeploymentSpec.model_validate(
        {"model": "dup-chat", "sizeInBillions": 8, "format": "awq", "quantization": "8bit"})
    plan = make_plan("dup", "llm", spec, catalog, config)
    assert (plan.engine.value, plan.model_id) == ("vllm", "example-org/dup-chat-8b-awq-8bit")
    for obj in render(plan):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
