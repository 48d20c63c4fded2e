"""The catalog loads, is validated, and matches DESIGN.md's seed table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modeldeploy.api import Engine, Hub, ModelFormat
from modeldeploy.catalog import Catalog, CatalogError, load_catalog
from modeldeploy.catalog.loader import load_catalog_file
from support import FIXTURES

# (model, size) -> (quantizations, engines for "none", HF model id)
SEEDS = {
    ("deepseek-v2-chat", 16): ({"4-bit", "8-bit", "none"}, ["vllm", "sglang", "transformers"],
                               "deepseek-ai/DeepSeek-V2-Lite-Chat"),
    ("deepseek-v2-chat", 236): ({"4-bit", "8-bit", "none"}, ["vllm", "sglang", "transformers"],
                                "deepseek-ai/DeepSeek-V2-Chat"),
    ("deepseek-vl2", 27): ({"none"}, ["vllm", "sglang", "transformers"],
                           "deepseek-ai/deepseek-vl2"),
    ("deepseek-vl2", 16): ({"none"}, ["vllm", "sglang", "transformers"],
                           "deepseek-ai/deepseek-vl2-small"),
    ("deepseek-vl2", 3): ({"none"}, ["vllm", "sglang", "transformers"],
                          "deepseek-ai/deepseek-vl2-tiny"),
}


@pytest.mark.parametrize(("key", "expected"), SEEDS.items(), ids=lambda v: str(v))
def test_seed_specs(catalog: Catalog, key: tuple[str, int],
                    expected: tuple[set[str], list[str], str]) -> None:
    quantizations, engines, model_id = expected
    family = catalog.family(key[0])
    assert family is not None
    spec = catalog.find_spec(family, ModelFormat.PYTORCH, key[1])
    assert spec is not None
    assert set(spec.quantizations) == quantizations
    assert [e.value for e in catalog.engines_allowed(family, spec, "none")] == engines
    assert spec.sources[Hub.HUGGINGFACE].modelId == model_id
    assert spec.sources[Hub.MODELSCOPE].modelId == model_id
    assert spec.attentionHeads


def test_deepseek_v2_quantized_only_on_transformers(catalog: Catalog) -> None:
    family = catalog.family("deepseek-v2-chat")
    assert family is not None
    for spec in family.specs:
        for quantization in ("4-bit", "8-bit"):
            assert catalog.engines_allowed(family, spec, quantization) == [Engine.TRANSFORMERS]


def test_catalog_is_broad(catalog: Catalog) -> None:
    others = [f for f in catalog.families.values() if not f.name.startswith("deepseek-v")]
    assert len(others) >= 8
    assert sum(len({s.sizeInBillions for s in f.specs}) >= 2 for f in others) >= 8


def test_every_row_has_pinned_or_named_revision(catalog: Catalog) -> None:
    for family in catalog.families.values():
        for spec in family.specs:
            for source in spec.sources.values():
                assert source.revision.strip(), (family.name, spec)


def test_close_names(catalog: Catalog) -> None:
    assert "deepseek-v2-chat" in catalog.close_names("deepseek-v2")
    assert "deepseek-vl2" in catalog.close_names("deepseek-vl")


def _write(tmp_path: Path, data: object, name: str = "extra.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _family(**over: object) -> dict[str, object]:
    family: dict[str, object] = {
        "name": "demo", "contextLength": 4096, "engines": {"vllm": {}},
        "specs": [{"format": "pytorch", "sizeInBillions": 7, "quantizations": ["none"],
                   "sources": {"huggingface": {"modelId": "org/demo", "revision": "main"}}}],
    }
    family.update(over)
    return family


BAD_FAMILIES = [
    (_family(contextLength=16), "contextLength"),
    (_family(engines={}), "engines"),
    (_family(engines={"llamacpp": {}}), "llamacpp"),
    (_family(defaultMaxModelLen=8192), "exceeds contextLength"),
    (_family(specs=[]), "specs"),
    (_family(specs=[{"format": "pytorch", "sizeInBillions": 7, "quantizations": ["none"],
                     "sources": {"huggingface": {"modelId": "no-slash", "revision": "main"}}}]),
     "modelId"),
    (_family(specs=2 * [{"format": "pytorch", "sizeInBillions": 7, "quantizations": ["none"],
                         "sources": {"huggingface": {"modelId": "o/m", "revision": "main"}}}]),
     "two specs"),
    (_family(unknownKey=1), "unknownKey"),
    # 4-bit is only served by transformers, which this family does not list
    (_family(specs=[{"format": "pytorch", "sizeInBillions": 7, "quantizations": ["4-bit"],
                     "sources": {"huggingface": {"modelId": "o/m", "revision": "main"}}}]),
     "no engine serves quantization '4-bit'"),
]


@pytest.mark.parametrize(("family", "message"), BAD_FAMILIES)
def test_invalid_rows_are_refused_at_load(tmp_path: Path, family: dict[str, object],
                                          message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog([_write(tmp_path, {"families": [family]})])


def test_user_file_replaces_builtin_family(tmp_path: Path) -> None:
    path = _write(tmp_path, {"families": [_family(name="deepseek-v2-chat")]})
    family = load_catalog([path]).family("deepseek-v2-chat")
    assert family is not None and [s.sizeInBillions for s in family.specs] == [7]


def test_missing_user_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such catalog file"):
        load_catalog([tmp_path / "nope.yaml"])


def test_builtin_files_validate_one_by_one() -> None:
    for path in sorted((Path(__file__).parents[2] / "operator/modeldeploy/catalog/data")
                       .glob("*.yaml")):
        load_catalog_file(path)


def test_xinference_model_src_form() -> None:
    catalog = load_catalog([FIXTURES / "xinference-model-src.json"])
    family = catalog.family("tiny-chat")
    assert family is not None and family.contextLength == 32768
    assert catalog.family("tiny-embedding-only") is None  # not a chat/generate model
    formats = sorted((s.format.value, s.sizeInBillions) for s in family.specs)
    assert formats == [("gptq", 7.0), ("pytorch", 1.8)]  # ggufv2 has no engine here
    spec = catalog.find_spec(family, ModelFormat.PYTORCH, "1_8")
    assert spec is not None and spec.attentionHeads == 16
    assert spec.sources[Hub.HUGGINGFACE].revision.startswith("0123456789")
    assert spec.sources[Hub.MODELSCOPE].revision == "master"
    assert catalog.engines_allowed(family, spec, "4-bit") == [Engine.TRANSFORMERS]
    assert catalog.engines_allowed(family, spec, "none")[0] is Engine.VLLM


def test_xinference_family_without_specs_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"model_name": "x"}]')
    catalog = load_catalog([path])
    assert catalog.family("x") is None
    assert [(s.name, s.reason) for s in catalog.skipped] == [
        ("x", "cannot be read: model_specs: Field required, got {'model_name': 'x'}")]
