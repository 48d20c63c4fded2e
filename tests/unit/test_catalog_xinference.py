"""Xinference's own catalog files import as Xinference reads them; engines by architecture."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from modeldeploy.api import Engine, Hub, ModelDeploymentSpec, ModelFormat, PlanError
from modeldeploy.catalog import Catalog, CatalogError, Family, builtin_catalog, load_catalog
from modeldeploy.catalog.xinference import engines_for_architectures, parse_size
from modeldeploy.config import DEFAULT_IMAGES, OperatorConfig
from modeldeploy.plan import make_plan
from support import FIXTURES

QUIRKS = FIXTURES / "xinference-quirks.json"


@pytest.fixture(scope="module")
def quirks() -> Catalog:
    return load_catalog([QUIRKS])


def _family(catalog: Catalog, name: str) -> Family:
    family = catalog.family(name)
    assert family is not None, f"{name} not loaded; skipped: {catalog.skipped}"
    return family


# -- several specs of one format and size: chosen by quantization, the first match wins -------
def test_duplicate_format_and_size_first_match_wins(quirks: Catalog) -> None:
    family = _family(quirks, "dup-chat")
    spec = quirks.find_spec(family, ModelFormat.PYTORCH, 8, "none")
    assert spec is not None
    assert spec.sources[Hub.HUGGINGFACE].modelId == "example-org/dup-chat-8b"
    assert spec.sources[Hub.HUGGINGFACE].revision.startswith("0123456789")
    assert spec.sources[Hub.MODELSCOPE].modelId == "example-ms/dup-chat-8b"
    every_id = {s.modelId for sp in family.specs for s in sp.sources.values()}
    assert "unsloth/dup-chat-8b-bnb-4bit" not in every_id  # never chosen, as in match_llm
    assert quirks.dropped["shadowed by an earlier spec (first match wins)"] == 2


def test_duplicate_format_and_size_differing_by_quantization(quirks: Catalog) -> None:
    family = _family(quirks, "dup-chat")
    int8 = quirks.find_spec(family, ModelFormat.GPTQ, 8, "Int8")
    int4 = quirks.find_spec(family, ModelFormat.GPTQ, 8, "Int4")
    assert int8 is not None and int4 is not None and int8 is not int4
    assert int8.sources[Hub.HUGGINGFACE].modelId == "example-org/dup-chat-8b-gptq-int8"
    assert int4.sources[Hub.HUGGINGFACE].modelId == "example-org/dup-chat-8b-gptq-int4"
    assert quirks.quantizations(family, ModelFormat.GPTQ, 8) == ["Int8", "Int4"]
    assert quirks.find_spec(family, ModelFormat.GPTQ, 8, "Int3") is None


def test_quantization_templated_model_id(quirks: Catalog) -> None:
    family = _family(quirks, "dup-chat")
    ids = {q: quirks.find_spec(family, ModelFormat.AWQ, 8, q) for q in ("4bit", "8bit")}
    assert {q: s.sources[Hub.HUGGINGFACE].modelId for q, s in ids.items() if s} == {
        "4bit": "example-org/dup-chat-8b-awq-4bit", "8bit": "example-org/dup-chat-8b-awq-8bit"}


def test_quantization_matches_without_case(quirks: Catalog) -> None:
    family = _family(quirks, "dup-chat")
    spec = quirks.find_spec(family, ModelFormat.FP8, 8, "FP8")
    assert spec is not None and spec.quantizations == ("fp8",)
    assert quirks.engines_allowed(family, spec, "FP8") == [Engine.VLLM, Engine.SGLANG]


# -- sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("written", "size"), [("0_6", 0.6), ("1_7", 1.7), ("4_5", 4.5),
                                               (16, 16.0), ("1058_59", 1058.59), ("1.8", 1.8)])
def test_parse_size(written: str | int, size: float) -> None:
    assert parse_size(written) == pytest.approx(size)


@pytest.mark.parametrize("bad", ["big", "", "0_0", -1, True])
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_underscore_sizes_name_the_same_spec(quirks: Catalog) -> None:
    family = _family(quirks, "under-chat")
    assert sorted(s.sizeInBillions for s in family.specs) == [0.6, 1.7, 30.0]
    by_number = quirks.find_spec(family, ModelFormat.PYTORCH, 0.6, "none")
    assert by_number is not None
    assert by_number is quirks.find_spec(family, ModelFormat.PYTORCH, "0_6", "none")
    assert by_number.sources[Hub.HUGGINGFACE].modelId == "example-org/under-chat-0.6b"
    assert quirks.find_spec(family, ModelFormat.PYTORCH, "1_7") is not None


def test_underscore_size_plans(quirks: Catalog, config: OperatorConfig) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "under-chat", "sizeInBillions": 0.6})
    plan = make_plan("under", "default", spec, quirks, config)
    assert plan.model_id == "example-org/under-chat-0.6b" and plan.gpus == 1


# -- what is skipped, and why -----------------------------------------------------------------
def test_skipped_formats_and_hubs_are_counted(quirks: Catalog) -> None:
    assert quirks.dropped["format ggufv2"] == 2 and quirks.dropped["format mlx"] == 2
    assert quirks.dropped["hub openmind_hub"] == 1


def test_family_of_skipped_formats_only(quirks: Catalog) -> None:
    assert quirks.family("gguf-only") is None
    (skipped,) = [s for s in quirks.skipped if s.name == "gguf-only"]
    assert skipped.reason == "no spec an engine here serves (formats: ggufv2 1, mlx 1)"
    assert skipped.origin == "xinference-quirks.json"


def test_broken_family_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modeldeploy.catalog.xinference"):
        catalog = load_catalog([QUIRKS])
    assert catalog.family("broken-chat") is None
    (skipped,) = [s for s in catalog.skipped if s.name == "broken-chat"]
    assert "context_length" in skipped.reason and "'long'" in skipped.reason
    assert any("broken-chat" in r.getMessage() and "context_length" in r.getMessage()
               for r in caplog.records)
    assert catalog.family("dup-chat") is not None  # the rest of the file loads


def test_bad_size_skips_its_family_only(tmp_path: Path) -> None:
    data = json.loads(QUIRKS.read_text())
    data[1]["model_specs"][0]["model_size_in_billions"] = "big"
    path = tmp_path / "llm_family.json"
    path.write_text(json.dumps(data))
    catalog = load_catalog([path])
    (skipped,) = [s for s in catalog.skipped if s.name == "under-chat"]
    assert "'big'" in skipped.reason
    assert catalog.family("dup-chat") is not None


def test_architectures_no_engine_runs_are_refused_by_name(quirks: Catalog) -> None:
    (skipped,) = [s for s in quirks.skipped if s.name == "odd-arch"]
    assert skipped.reason == (
        "no engine here runs its architectures (TelechatForCausalLM): none is among those of "
        "vllm 0.32.0, sglang 0.5.23 or transformers 4.57.6")


def test_not_a_json_catalog(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"model_name": ')
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog([path])
    path.write_text('"a string"')
    with pytest.raises(CatalogError, match="expected a list of model families"):
        load_catalog([path])


def test_gzipped_file_in_a_configmap_volume(tmp_path: Path) -> None:
    # the layout the kubelet writes: files are links into ..data, a link to a dated folder
    dated = tmp_path / "..2026_01_01_00_00_00.1"
    dated.mkdir()
    (dated / "llm_family.json.gz").write_bytes(gzip.compress(QUIRKS.read_bytes()))
    (tmp_path / "..data").symlink_to(dated.name)
    (tmp_path / "llm_family.json.gz").symlink_to("..data/llm_family.json.gz")
    catalog = load_catalog([tmp_path])
    assert sorted(catalog.imported) == sorted(load_catalog([QUIRKS]).imported)
    assert catalog.skipped[0].origin == "llm_family.json.gz"


# -- the flat pair (one file per hub, no architectures) ---------------------------------------
FLAT = [FIXTURES / "xinference-flat-hf.json", FIXTURES / "xinference-flat-modelscope.json"]


def test_flat_form_needs_architectures() -> None:
    catalog = load_catalog(FLAT)
    (skipped,) = [s for s in catalog.skipped if s.name == "old-chat"]
    assert "names no architectures" in skipped.reason
    assert skipped.origin == "xinference-flat-hf.json + xinference-flat-modelscope.json"


def test_flat_form_merges_hub_files_first_match_wins() -> None:
    catalog = load_catalog([FIXTURES / "xinference-architectures.yaml", *FLAT])
    family = _family(catalog, "old-chat")
    assert family.architectures == ("Qwen2ForCausalLM",)
    spec = catalog.find_spec(family, ModelFormat.PYTORCH, 7, "none")
    assert spec is not None
    assert spec.sources[Hub.HUGGINGFACE].modelId == "example-org/old-chat-7b"
    assert spec.sources[Hub.MODELSCOPE].revision == "v1.0.0"
    assert catalog.dropped["shadowed by an earlier spec (first match wins)"] == 1
    awq = catalog.find_spec(family, ModelFormat.AWQ, 7, "Int4")
    assert awq is not None and awq.quantizations == ("Int4",)


# -- a built-in family and an imported one of the same name -----------------------------------
def test_builtin_specs_win_imported_ones_are_added(quirks: Catalog) -> None:
    family = _family(quirks, "deepseek-vl2")
    assert family.origin == "built-in deepseek.yaml"
    tiny = quirks.find_spec(family, ModelFormat.PYTORCH, 3, "none")
    assert tiny is not None and tiny.origin == "built-in deepseek.yaml"
    assert tiny.sources[Hub.HUGGINGFACE].modelId == "deepseek-ai/deepseek-vl2-tiny"
    added = quirks.find_spec(family, ModelFormat.GPTQ, 3, "Int4")
    assert added is not None and added.origin == "xinference-quirks.json"
    # our family names its architecture: its engines, with vLLM's override, serve the added spec
    rule = quirks.engine_rule(family, added, Engine.VLLM)
    assert rule is not None and '{"architectures": ["DeepseekVLV2ForCausalLM"]}' in rule.args
    assert quirks.dropped["shadowed by a spec of our own catalog files"] == 1


# -- engines decided by architecture ----------------------------------------------------------
V, S, T = Engine.VLLM, Engine.SGLANG, Engine.TRANSFORMERS
ENGINE_TABLE = [
    (["LlamaForCausalLM"], [V, S, T]),
    (["DeepseekVLV2ForCausalLM"], [V, S, T]),
    (["DeepseekV2ForCausalLM"], [V, S, T]),
    (["SeedOssForCausalLM"], [V, T]),  # not an EntryClass of SGLang 0.5.23
    (["MiniCPMV"], [V, S]),  # remote code only for transformers
    (["InternLM3ForCausalLM"], [V, S]),
    (["MllamaForConditionalGeneration"], [S]),  # vLLM dropped it after 0.10.2
    (["BaichuanForCausalLM"], [S]),  # vLLM dropped it after 0.23.0
    (["GPT2LMHeadModel"], [V, S, T]),
    (["TelechatForCausalLM"], []),  # vLLM spells it TeleChatForCausalLM
    (["NoSuchForCausalLM", "Qwen2ForCausalLM"], [V, S, T]),  # any of them
    ([], []),
]


@pytest.mark.parametrize(("architectures", "engines"), ENGINE_TABLE,
                         ids=lambda v: "+".join(map(str, v)) or "none")
def test_engine_choice_by_architecture(architectures: list[str],
                                       engines: list[Engine]) -> None:
    assert list(engines_for_architectures(architectures,
                                          builtin_catalog().architectures)) == engines


def test_engine_rules_carry_image_variant_and_minimum_version() -> None:
    rules = engines_for_architectures(["DeepseekVLV2ForCausalLM"],
                                      builtin_catalog().architectures)
    assert rules[V].minVersion == "0.7.0" and rules[T].imageVariant == "vl2"
    assert rules[S].minVersion == "0.4.4.post2" and rules[S].imageVariant is None


def test_architecture_lists_name_their_source() -> None:
    archs = builtin_catalog().architectures
    assert {e: a.version for e, a in archs.items()} == {V: "0.32.0", S: "0.5.23", T: "4.57.6"}
    assert all(a.source and len(a.names) > 100 for a in archs.values())
    # the lists are those of the engine versions the default images pin
    for engine in (V, S):
        tag = DEFAULT_IMAGES[engine.value].rsplit(":", 1)[1]
        assert tag.removeprefix("v").split("-")[0] == archs[engine].version, engine


def test_imported_family_plans_on_the_engine_its_architecture_allows(
        tmp_path: Path, config: OperatorConfig) -> None:
    data = json.loads(QUIRKS.read_text())
    data[0]["architectures"] = ["MllamaForConditionalGeneration"]
    path = tmp_path / "llm_family.json"
    path.write_text(json.dumps(data))
    catalog = load_catalog([path])
    spec = ModelDeploymentSpec.model_validate({"model": "dup-chat", "sizeInBillions": 8})
    assert make_plan("dup", "default", spec, catalog, config).engine is Engine.SGLANG
    with pytest.raises(PlanError, match="engine vllm cannot serve"):
        make_plan("dup", "default", spec.model_copy(update={"engine": Engine.VLLM}), catalog,
                  config)


def test_family_naming_architectures_an_engine_does_not_run(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps({"families": [{
        "name": "mine", "contextLength": 4096, "architectures": ["SeedOssForCausalLM"],
        "engines": {"sglang": {}},
        "specs": [{"format": "pytorch", "sizeInBillions": 7, "quantizations": ["none"],
                   "sources": {"huggingface": {"modelId": "o/m", "revision": "main"}}}]}]}))
    with pytest.raises(CatalogError, match=r"engine sglang 0\.5\.23 runs none of its "
                                           r"architectures"):
        load_catalog([path])


# -- the minimum engine version ---------------------------------------------------------------
@pytest.mark.parametrize(("image", "too_old"), [
    ("vllm/vllm-openai:v0.6.6", True), ("vllm/vllm-openai:v0.7.0", False),
    ("vllm/vllm-openai:v0.31.0", False), ("vllm/vllm-openai:0.10.1.1", False),
    ("registry.local:5000/vllm:v0.6.3", True), ("vllm/vllm-openai:latest", False),
    ("vllm/vllm-openai@sha256:" + "0" * 64, False)])
def test_minimum_engine_version(image: str, too_old: bool, config: OperatorConfig) -> None:
    catalog = builtin_catalog()
    spec = ModelDeploymentSpec.model_validate(
        {"model": "deepseek-vl2", "sizeInBillions": 3, "engine": "vllm", "image": image})
    if too_old:
        with pytest.raises(PlanError, match=r"is older than 0\.7\.0, the first vllm release"):
            make_plan("vl2", "default", spec, catalog, config)
    else:
        assert make_plan("vl2", "default", spec, catalog, config).image == image
