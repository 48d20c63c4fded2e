"""Adding an engine is one module in engines/, its catalog rows and its image default: every
engine has all three, and no other module of the operator names an engine."""

from __future__ import annotations

import re
from pathlib import Path

from modeldeploy.api import ENGINE_PREFERENCE, Engine
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import EngineInput, engine_module

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modeldeploy"
# where engines may be named: their modules, the API's enum, the defaults, the catalog
ALLOWED = ("engines/", "api/spec.py", "config.py", "catalog/")
NAMED = re.compile(r"Engine\.(VLLM|SGLANG|TRANSFORMERS)\b|[\"'](vllm|sglang|transformers)[\"']")


def test_every_engine_has_a_module_an_image_and_a_catalog_capability(
        catalog: Catalog, config: OperatorConfig) -> None:
    assert set(ENGINE_PREFERENCE) == set(Engine)
    for engine in Engine:
        module = engine_module(engine)
        assert module.engine is engine
        assert engine.value in config.images
        assert engine in catalog.engines


def test_engines_see_only_their_narrow_input() -> None:
    given = EngineInput(model_path="/m", served_model_name="s", tensor_parallel=2,
                        max_model_len=4096, quantization="none", trust_remote_code=True,
                        args=("--x",), env={"A": "1"})
    for engine in Engine:
        module = engine_module(engine)
        command = module.command(given)
        assert "/m" in command and "s" in command and command[-1] == "--x"
        assert "--trust-remote-code" in command
        assert module.env(given)["A"] == "1"


def test_no_other_module_names_an_engine() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(ALLOWED):
            continue
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if NAMED.search(text):
                offenders.append(f"{relative}:{number}: {text.strip()}")
    assert offenders == []
