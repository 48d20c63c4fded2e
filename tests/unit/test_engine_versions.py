"""The oldest engine release a model needs: the catalog's minVersion against the image's tag.

DeepSeek-VL2 is in vLLM's model registry from 0.7.0 and in SGLang's from 0.4.4.post2 (the
catalog's data, read from the releases' sdists); an image older than that, given in spec.image
or the operator's defaults, is refused at planning with both versions named.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeldeploy.api import ModelDeploymentSpec, PlanError
from modeldeploy.api.reasons import Reason
from modeldeploy.catalog import builtin_catalog
from modeldeploy.catalog.catalog import version_older
from modeldeploy.catalog.model import Architectures, EngineRule
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import make_plan


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig()


@pytest.mark.parametrize(("version", "than", "older"), [
    ("0.6.6", "0.7.0", True), ("0.7.0", "0.7.0", False), ("0.7", "0.7.0", False),
    ("0.7.0", "0.7", False), ("0.6.6.post1", "0.7.0", True), ("0.4.4.post1", "0.4.4.post2", True),
    ("0.4.4", "0.4.4.post2", True), ("0.4.4.post2", "0.4.4.post2", False),
    ("0.4.5", "0.4.4.post2", False), ("0.4.4.post10", "0.4.4.post2", False),
    ("0.10.1", "0.7.0", False), ("1.0", "0.99.9", False)])
def test_version_order(version: str, than: str, older: bool) -> None:
    assert version_older(version, than) is older


@pytest.mark.parametrize(("image", "message"), [
    ("lmsysorg/sglang:v0.4.4.post1-cu124", "sglang 0.4.4.post1 (image "
     "lmsysorg/sglang:v0.4.4.post1-cu124) is older than 0.4.4.post2, the first sglang release"),
    ("lmsysorg/sglang:v0.4.3", "sglang 0.4.3 (image lmsysorg/sglang:v0.4.3) is older than "
     "0.4.4.post2"),
    ("lmsysorg/sglang:v0.4.4.post2-cu124", None), ("lmsysorg/sglang:v0.5.23", None)])
def test_minimum_sglang_version(image: str, message: str | None,
                                config: OperatorConfig) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "deepseek-vl2", "sizeInBillions": 3, "engine": "sglang", "image": image})
    if message is None:
        assert make_plan("vl2", "default", spec, builtin_catalog(), config).image == image
    else:
        with pytest.raises(PlanError) as info:
            make_plan("vl2", "default", spec, builtin_catalog(), config)
        assert info.value.reason == Reason.ENGINE_TOO_OLD and message in info.value.message


@pytest.mark.parametrize("bad", ["0.4.4-post2", "v0.7.0", "0.7.0rc1", "latest", ""])
def test_a_minimum_version_is_a_release(bad: str) -> None:
    """A minimum that is no release number is refused when the catalog file is read."""
    with pytest.raises(ValidationError, match="minVersion"):
        EngineRule.model_validate({"minVersion": bad})
    with pytest.raises(ValidationError, match="minVersions"):
        Architectures.model_validate({"version": "1.0", "source": "s", "names": ["A"],
                                      "minVersions": {"A": bad}})


def test_the_catalog_minimums_of_deepseek_vl2() -> None:
    catalog = builtin_catalog()
    family = catalog.family("deepseek-vl2")
    assert family is not None
    minimums = {engine.value: rule.minVersion for engine, rule in family.engines.items()}
    assert minimums == {"vllm": "0.7.0", "sglang": "0.4.4.post2", "transformers": None}
    # what the imported families get for the same architecture agrees
    for engine, archs in catalog.architectures.items():
        assert archs.minVersions.get("DeepseekVLV2ForCausalLM") == minimums[engine.value]


def test_the_default_images_meet_every_minimum(config: OperatorConfig) -> None:
    catalog = builtin_catalog()
    checked = 0
    for family in catalog.families.values():
        for spec in family.specs:
            for engine, rule in family.engines_for(spec).items():
                if rule.minVersion is None:
                    continue
                assert rule.imageVariant is None, (family.name, engine)
                problem = catalog.engine_version_problem(engine, rule,
                                                         config.images[engine.value])
                assert problem is None, (family.name, problem)
                checked += 1
    assert checked >= 6  # deepseek-vl2's three sizes on vLLM and SGLang at least


