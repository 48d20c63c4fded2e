"""The planner: engine choice, GPU sizing, tensor parallelism and refusals, by table."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.api import Engine, ModelDeploymentSpec, PlanError, Reason
from modeldeploy.cache.naming import cache_claim_name
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import Plan, make_plan


def plan(catalog: Catalog, config: OperatorConfig, **spec: Any) -> Plan:
    return make_plan("md", "ns", ModelDeploymentSpec.model_validate(spec), catalog, config)


def refusal(catalog: Catalog, config: OperatorConfig, **spec: Any) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan(catalog, config, **spec)
    return info.value


# (model, size, quantization, engine or None) -> (engine, GPUs on 80 GB, GPUs on 40 GB)
# None for 40 GB: more GPUs than one node holds.
GPU_TABLE = [
    ("deepseek-v2-chat", 16, "none", None, "vllm", 1, 1),
    ("deepseek-v2-chat", 16, "none", "sglang", "sglang", 1, 1),
    ("deepseek-v2-chat", 16, "none", "transformers", "transformers", 1, 1),
    ("deepseek-v2-chat", 16, "8-bit", None, "transformers", 1, 1),
    ("deepseek-v2-chat", 16, "4-bit", None, "transformers", 1, 1),
    ("deepseek-v2-chat", 236, "none", None, "vllm", 8, None),
    ("deepseek-v2-chat", 236, "none", "sglang", "sglang", 8, None),
    ("deepseek-v2-chat", 236, "8-bit", None, "transformers", 4, 8),
    ("deepseek-v2-chat", 236, "4-bit", None, "transformers", 2, 4),
    ("deepseek-vl2", 3, "none", None, "vllm", 1, 1),
    ("deepseek-vl2", 3, "none", "transformers", "transformers", 1, 1),
    ("deepseek-vl2", 16, "none", None, "vllm", 1, 2),
    ("deepseek-vl2", 16, "none", "sglang", "sglang", 1, 2),
    ("deepseek-vl2", 16, "none", "transformers", "transformers", 1, 2),
    ("deepseek-vl2", 27, "none", "transformers", "transformers", 2, 3),
    ("deepseek-vl2", 27, "none", None, "vllm", 2, 4),
]


@pytest.mark.parametrize(("model", "size", "quant", "engine", "chosen", "on80", "on40"),
                         GPU_TABLE)
def test_gpu_sizing(catalog: Catalog, config: OperatorConfig, model: str, size: int,
                    quant: str, engine: str | None, chosen: str, on80: int,
                    on40: int | None) -> None:
    spec: dict[str, Any] = {"model": model, "sizeInBillions": size, "quantization": quant}
    if engine:
        spec["engine"] = engine
    result = plan(catalog, config, **spec)
    assert result.engine.value == chosen
    assert result.gpus == on80
    tp = Engine(chosen) in (Engine.VLLM, Engine.SGLANG)
    assert result.tensor_parallel == (on80 if tp else 1)
    spec["gpu"] = {"memoryGiB": 40}
    if on40 is None:
        err = refusal(catalog, config, **spec)
        assert err.reason == Reason.NO_GPU_FITS
        assert "a node holds at most 8" in err.message
    else:
        assert plan(catalog, config, **spec).gpus == on40


def test_operator_default_gpu_memory_applies(catalog: Catalog) -> None:
    small = OperatorConfig(gpuMemoryGiB=40)
    assert plan(catalog, small, model="deepseek-vl2", sizeInBillions=16).gpus == 2


def test_tensor_parallel_must_divide_heads(catalog: Catalog, config: OperatorConfig) -> None:
    # deepseek-vl2 (27B) has 32 heads: tensor parallelism must be a power of two dividing it
    err = refusal(catalog, config, model="deepseek-vl2", sizeInBillions=27, engine="vllm",
                  gpu={"count": 3})
    assert err.reason == Reason.INVALID_GPU_COUNT
    assert "power of two dividing the 32 attention heads (1, 2, 4, 8)" in err.message
    assert plan(catalog, config, model="deepseek-vl2", sizeInBillions=27,
                gpu={"count": 8}).tensor_parallel == 8


def test_explicit_count_too_few(catalog: Catalog, config: OperatorConfig) -> None:
    err = refusal(catalog, config, model="deepseek-v2-chat", sizeInBillions=236,
                  gpu={"count": 4})
    assert err.reason == Reason.INVALID_GPU_COUNT
    assert "too few" in err.message and "at least 8" in err.message


def test_explicit_count_wins_when_valid(catalog: Catalog, config: OperatorConfig) -> None:
    result = plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                  gpu={"count": 2})
    assert (result.gpus, result.tensor_parallel) == (2, 2)
    # transformers spreads layers: any count works
    result = plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                  engine="transformers", gpu={"count": 3})
    assert (result.gpus, result.tensor_parallel) == (3, 1)


def test_max_gpus_per_node(catalog: Catalog) -> None:
    four = OperatorConfig(maxGpusPerNode=4)
    err = refusal(catalog, four, model="deepseek-v2-chat", sizeInBillions=236)
    assert "a node holds at most 4" in err.message


REFUSALS = [
    ({"model": "deepseek-v3", "sizeInBillions": 16}, Reason.UNKNOWN_MODEL,
     "model 'deepseek-v3' is not in the catalog; did you mean: "),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 7}, Reason.UNKNOWN_SPEC,
     "deepseek-v2-chat has no pytorch spec of 7B; available: pytorch 16B, pytorch 236B"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "format": "gptq",
      "quantization": "Int4"}, Reason.UNKNOWN_SPEC, "has no gptq spec of 16B"),
    ({"model": "deepseek-vl2", "sizeInBillions": 3, "quantization": "4-bit"},
     Reason.UNKNOWN_QUANTIZATION,
     "deepseek-vl2 3B pytorch has no quantization '4-bit'; available: none"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "quantization": "4-bit",
      "engine": "sglang"}, Reason.ENGINE_NOT_ALLOWED,
     "engine sglang cannot serve deepseek-v2-chat 16B pytorch 4-bit; engines that can: "
     "transformers"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "quantization": "4-bit",
      "engine": "vllm"}, Reason.ENGINE_NOT_ALLOWED,
     "engine vllm cannot serve deepseek-v2-chat 16B pytorch 4-bit; engines that can: "
     "transformers"),
    ({"model": "deepseek-vl2", "sizeInBillions": 16, "engine": "vllm",
      "image": "vllm/vllm-openai:v0.6.6"}, Reason.ENGINE_TOO_OLD,
     "vllm 0.6.6 (image vllm/vllm-openai:v0.6.6) is older than 0.7.0, the first vllm release "
     "that runs this model"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "engineArgs": ["--port=9000"]},
     Reason.INVALID_ENGINE_ARGS, "engineArgs may not set --port for vllm"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "engine": "sglang",
      "engineArgs": ["--tp", "2"]}, Reason.INVALID_ENGINE_ARGS,
     "may not set --tp (the engine reads it as --tp-size) for sglang: the operator sets it "
     "from spec.gpu.count"),
    ({"model": "deepseek-v2-chat", "sizeInBillions": 16, "maxModelLen": 200000},
     Reason.INVALID_MAX_MODEL_LEN, "maxModelLen 200000 exceeds deepseek-v2-chat's context "
                                   "length 128000"),
]


@pytest.mark.parametrize(("spec", "reason", "message"), REFUSALS)
def test_refusals_say_what_is_available(catalog: Catalog, config: OperatorConfig,
                                        spec: dict[str, Any], reason: str,
                                        message: str) -> None:
    err = refusal(catalog, config, **spec)
    assert err.reason == reason
    assert message in err.message


def test_hub_not_available(catalog: Catalog, config: OperatorConfig) -> None:
    err = refusal(catalog, config, model="llama-3.1-instruct", sizeInBillions=405,
                  format="fp8", quantization="FP8", hub="modelscope")
    assert err.reason == Reason.HUB_NOT_AVAILABLE
    assert "available hubs: huggingface" in err.message


def test_image_not_configured(catalog: Catalog) -> None:
    config = OperatorConfig(images={"vllm": "v"})
    err = refusal(catalog, config, model="deepseek-vl2", sizeInBillions=3,
                  engine="transformers")
    assert err.reason == Reason.IMAGE_NOT_CONFIGURED
    assert "images.transformers-vl2" in err.message


def test_a_default_image_older_than_the_model_needs_is_refused(catalog: Catalog) -> None:
    """The operator's configured image (not only spec.image) is held to the catalog's minimum."""
    old = OperatorConfig(images={"vllm": "registry.local/vllm-openai:v0.6.6.post1-cu124"})
    err = refusal(catalog, old, model="deepseek-vl2", sizeInBillions=3, engine="vllm")
    assert err.reason == Reason.ENGINE_TOO_OLD
    assert err.message == (
        "deepseek-vl2 3B pytorch none: vllm 0.6.6.post1 (image "
        "registry.local/vllm-openai:v0.6.6.post1-cu124) is older than 0.7.0, the first vllm "
        "release that runs this model")
    # the same image serves a model without a minimum; a new enough one serves DeepSeek-VL2
    assert plan(catalog, old, model="deepseek-v2-chat", sizeInBillions=16).image.endswith(
        "v0.6.6.post1-cu124")
    new = OperatorConfig(images={"vllm": "vllm/vllm-openai:v0.7.0"})
    assert plan(catalog, new, model="deepseek-vl2", sizeInBillions=3, engine="vllm").image == \
        "vllm/vllm-openai:v0.7.0"


def test_resolution_details(catalog: Catalog, config: OperatorConfig) -> None:
    result = plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16)
    assert result.model_id == "deepseek-ai/DeepSeek-V2-Lite-Chat"
    assert result.revision == "85864749cd611b4353ce1decdb286193298f64c7"
    assert result.max_model_len == 8192
    assert result.served_model_name == "md"
    assert result.image == config.images["vllm"]
    assert result.cache.size == "34Gi"
    assert result.engine_input.trust_remote_code


def test_overrides(catalog: Catalog, config: OperatorConfig) -> None:
    result = plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                  hub="modelscope", revision="v1", maxModelLen=4096, image="my/vllm:1",
                  servedModelName="deepseek", cache={"size": "100Gi",
                                                     "storageClassName": "fast"})
    assert (result.model_id, result.revision) == ("deepseek-ai/DeepSeek-V2-Lite-Chat", "v1")
    assert result.cache.claim_name.startswith("weights-ms-deepseek-v2-lite-chat-")
    assert (result.max_model_len, result.image, result.served_model_name) == (
        4096, "my/vllm:1", "deepseek")
    assert (result.cache.size, result.cache.storage_class) == ("100Gi", "fast")


def test_quantization_spelling_is_matched_without_case(catalog: Catalog,
                                                       config: OperatorConfig) -> None:
    result = plan(catalog, config, model="llama-3.1-instruct", sizeInBillions=405,
                  format="fp8", quantization="fp8")
    assert result.quantization == "FP8" and result.gpus == 8


def test_same_weights_share_one_cache_claim(catalog: Catalog, config: OperatorConfig) -> None:
    names = {plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                  quantization=q).cache.claim_name for q in ("none", "8-bit", "4-bit")}
    assert len(names) == 1
    other = plan(catalog, config, model="deepseek-v2-chat", sizeInBillions=16, revision="x")
    assert other.cache.claim_name not in names


@pytest.mark.parametrize("model_id", ["a/" + "b" * 120, "Org/Model_Name.v2", "x/y"])
def test_cache_claim_names_are_dns_labels(model_id: str) -> None:
    from modeldeploy.api import Hub

    name = cache_claim_name(Hub.HUGGINGFACE, model_id, "main")
    assert len(name) + len("-dl") <= 63
    assert name.replace("-", "").isalnum() and name == name.lower()
