"""The architecture lists are read from the engines' own sources, and match the data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.api import Engine
from modeldeploy.catalog import builtin_catalog
from modeldeploy.catalog.registries import sglang_architectures, vllm_architectures

REGISTRY = '''
_TEXT_GENERATION_MODELS = {
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM"),
}
_EMBEDDING_MODELS = {"BertModel": ("bert", "BertEmbeddingModel")}
_MULTIMODAL_MODELS = {"DeepseekVLV2ForCausalLM": ("deepseek_vl2", "DeepseekVLV2ForCausalLM")}
_PREVIOUSLY_SUPPORTED_MODELS = {"MllamaForConditionalGeneration": "0.10.2"}
'''


def test_vllm_generating_tables_only() -> None:
    assert vllm_architectures(REGISTRY) == [
        "DeepseekVLV2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"]


def test_vllm_refuses_another_file() -> None:
    with pytest.raises(ValueError, match=r"not vLLM's registry\.py"):
        vllm_architectures("x = 1\n")


def test_sglang_entry_classes(tmp_path: Path) -> None:
    (tmp_path / "llama.py").write_text(
        "class LlamaForCausalLM: ...\nclass Phi3ForCausalLM(LlamaForCausalLM): ...\n"
        "EntryClass = [LlamaForCausalLM, Phi3ForCausalLM]\n")
    (tmp_path / "qwen.py").write_text(
        "class Qwen2ForCausalLM: ...\nQwenAlias = Qwen2ForCausalLM\nEntryClass = QwenAlias\n")
    (tmp_path / "utils.py").write_text("def helper(): ...\n")
    assert sglang_architectures(tmp_path) == [
        "LlamaForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM"]


def test_data_files_hold_what_the_engines_register() -> None:
    archs = builtin_catalog().architectures
    assert {"LlamaForCausalLM", "DeepseekVLV2ForCausalLM", "SeedOssForCausalLM",
            "Glm4MoeForCausalLM"} <= archs[Engine.VLLM].names
    assert "DeepseekVL2ForCausalLM" in archs[Engine.SGLANG].names  # SGLang's own spelling
    assert archs[Engine.SGLANG].runs("DeepseekVLV2ForCausalLM")  # via its config class
    assert "DeepseekV2ForCausalLM" in archs[Engine.TRANSFORMERS].names
    assert "TelechatForCausalLM" not in set().union(*(a.names for a in archs.values()))
