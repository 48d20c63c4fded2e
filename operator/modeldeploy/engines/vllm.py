"""vLLM (``vllm/vllm-openai``): OpenAI server on 8000 with /health and /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import Engine
from .base import ENGINE_PORT, LEADER_ADDRESS, WORKER_INDEX, EngineInput, EngineModule
from .flags import FlagSyntax

MANAGED = {
    "--model": "spec.model (the weights are mounted from the cache)",
    "--host": "the operator (0.0.0.0)",
    "--port": "the operator (8000; spec.port sets the Service port)",
    "--tensor-parallel-size": "spec.gpu.count",
    "-tp": "spec.gpu.count",
    "--served-model-name": "spec.servedModelName",
    "--max-model-len": "spec.maxModelLen",
    "--pipeline-parallel-size": "spec.gpu.nodes",
    "-pp": "spec.gpu.nodes",
    "--nnodes": "spec.gpu.nodes",
    "-n": "spec.gpu.nodes",
    "--node-rank": "the operator (each pod's index in its LeaderWorkerSet group)",
    "-r": "the operator (each pod's index in its LeaderWorkerSet group)",
    "--master-addr": "the operator (the group's leader pod)",
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
            *self._group(given),
            *self.tail_args(given),
        ]

    @staticmethod
    def _group(given: EngineInput) -> list[str]:
        """Across nodes without Ray (vLLM's multiprocessing backend): every pod runs the same
        command with its node rank; the leader's rank 0 serves the API, the others run
        headless; torch.distributed meets at the leader's address (its DNS name)."""
        if given.nodes == 1:
            return []
        return [
            "--pipeline-parallel-size", str(given.pipeline_parallel),
            "--distributed-executor-backend", "mp",
            "--nnodes", str(given.nodes),
            "--node-rank", WORKER_INDEX if given.worker else "0",
            "--master-addr", LEADER_ADDRESS,
            *(["--headless"] if given.worker else []),
        ]


MODULE = VLLM(engine=Engine.VLLM, tensor_parallel=True, managed_flags=MANAGED, multi_node=True,
              # FlexibleArgumentParser: `--max_model_len` is `--max-model-len`
              flag_syntax=FlagSyntax(underscores_are_dashes=True),
              extra_env={"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
