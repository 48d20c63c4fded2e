"""One module per serving engine. Adding an engine: a module here and catalog rows."""

from __future__ import annotations

from ..api import Engine
from . import sglang, transformers, vllm
from .base import ENGINE_PORT, EngineInput, EngineModule

_MODULES: dict[Engine, EngineModule] = {
    m.engine: m for m in (vllm.MODULE, sglang.MODULE, transformers.MODULE)
}


def engine_module(engine: Engine) -> EngineModule:
    return _MODULES[engine]


__all__ = ["ENGINE_PORT", "EngineInput", "EngineModule", "engine_module"]
