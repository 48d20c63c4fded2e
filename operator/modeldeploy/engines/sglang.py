"""SGLang (``lmsysorg/sglang``): the image has no server entrypoint; /health is 503 until warm."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import Engine
from .base import ENGINE_PORT, EngineInput, EngineModule

MANAGED = {
    "--model-path": "spec.model (the weights are mounted from the cache)",
    "--model": "spec.model (the weights are mounted from the cache)",
    "--host": "the operator (0.0.0.0)",
    "--port": "the operator (8000; spec.port sets the Service port)",
    "--tp-size": "spec.gpu.count",
    "--tensor-parallel-size": "spec.gpu.count",
    "--served-model-name": "spec.servedModelName",
    "--context-length": "spec.maxModelLen",
}


@dataclass(frozen=True)
class SGLang(EngineModule):
    def command(self, given: EngineInput) -> list[str]:
        return [
            "python3", "-m", "sglang.launch_server",
            "--model-path", given.model_path,
            "--served-model-name", given.served_model_name,
            "--host", "0.0.0.0",
            "--port", str(ENGINE_PORT),
            "--tp-size", str(given.tensor_parallel),
            "--context-length", str(given.max_model_len),
            "--enable-metrics",
            *self.tail_args(given),
        ]


MODULE = SGLang(engine=Engine.SGLANG, tensor_parallel=True, managed_flags=MANAGED,
                extra_env={"SGLANG_DISABLE_REQUEST_LOGGING": "1"})
