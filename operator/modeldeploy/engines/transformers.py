"""Transformers, served by modeldeploy's own image (``python -m modeldeploy_serve``, the
``modeldeploy-serve`` distribution in serve/).

Layers are spread over the replica's GPUs with ``device_map="auto"``, so any GPU count
works; 8-bit and 4-bit are bitsandbytes quantization at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import Engine
from .base import ENGINE_PORT, EngineInput, EngineModule

MANAGED = {
    "--model": "spec.model (the weights are mounted from the cache)",
    "--host": "the operator (0.0.0.0)",
    "--port": "the operator (8000; spec.port sets the Service port)",
    "--served-model-name": "spec.servedModelName",
    "--quantization": "spec.quantization",
    "--max-model-len": "spec.maxModelLen",
}


@dataclass(frozen=True)
class Transformers(EngineModule):
    def command(self, given: EngineInput) -> list[str]:
        quantization = [] if given.quantization == "none" else ["--quantization",
                                                                given.quantization]
        return [
            "python", "-m", "modeldeploy_serve",
            "--model", given.model_path,
            "--served-model-name", given.served_model_name,
            "--host", "0.0.0.0",
            "--port", str(ENGINE_PORT),
            "--max-model-len", str(given.max_model_len),
            *quantization,
            *self.tail_args(given),
        ]


MODULE = Transformers(engine=Engine.TRANSFORMERS, tensor_parallel=False,
                      managed_flags=MANAGED, run_as_non_root=True)
