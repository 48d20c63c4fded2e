"""vLLM (``vllm/vllm-openai``): OpenAI server on 8000 with /health and /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import Engine
from .base import ENGINE_PORT, EngineInput, EngineModule
from .flags import FlagSyntax

MANAGED = {
    "--model": "spec.model (the weights are mounted from the cache)",
    "--host": "the operator (0.0.0.0)",
    "--port": "the operator (8000; spec.port sets the Service port)",
    "--tensor-parallel-size": "spec.gpu.count",
    "-tp": "spec.gpu.count",
    "--served-model-name": "spec.servedModelName",
    "--max-model-len": "spec.maxModelLen",
}


@dataclass(frozen=True)
class VLLM(EngineModule):
    def command(self, given: EngineInput) -> list[str]:
        return [
            "vllm", "serve", given.model_path,
            "--served-model-name", given.served_model_name,
            "--host", "0.0.0.0",
            "--port", str(ENGINE_PORT),
            "--tensor-parallel-size", str(given.tensor_parallel),
            "--max-model-len", str(given.max_model_len),
            *self.tail_args(given),
        ]


MODULE = VLLM(engine=Engine.VLLM, tensor_parallel=True, managed_flags=MANAGED,
              # FlexibleArgumentParser: `--max_model_len` is `--max-model-len`
              flag_syntax=FlagSyntax(underscores_are_dashes=True),
              extra_env={"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
