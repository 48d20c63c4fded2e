"""SGLang (``lmsysorg/sglang``): the image has no server entrypoint; /health is 503 until warm."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import Engine
from .base import ENGINE_PORT, LEADER_ADDRESS, WORKER_INDEX, EngineInput, EngineModule

MANAGED = {
    "--model-path": "spec.model (the weights are mounted from the cache)",
    "--model": "spec.model (the weights are mounted from the cache)",
    "--host": "the operator (0.0.0.0)",
    "--port": "the operator (8000; spec.port sets the Service port)",
    "--tp-size": "spec.gpu.count",
    "--tensor-parallel-size": "spec.gpu.count",
    "--served-model-name": "spec.servedModelName",
    "--context-length": "spec.maxModelLen",
    "--nnodes": "spec.gpu.nodes",
    "--node-rank": "the operator (each pod's index in its LeaderWorkerSet group)",
    "--dist-init-addr": "the operator (the group's leader pod)",
    "--nccl-init-addr": "the operator (the group's leader pod)",
}

# where the ranks of a group meet (torch.distributed) on the leader
DIST_INIT_PORT = 20000


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
            *self._group(given),
            *self.tail_args(given),
        ]

    @staticmethod
    def _group(given: EngineInput) -> list[str]:
        """Across nodes: tensor parallel over every GPU of the group, each pod with its node
        rank, meeting at the leader."""
        if given.nodes == 1:
            return []
        return [
            "--nnodes", str(given.nodes),
            "--node-rank", WORKER_INDEX if given.worker else "0",
            "--dist-init-addr", f"{LEADER_ADDRESS}:{DIST_INIT_PORT}",
        ]


MODULE = SGLang(engine=Engine.SGLANG, tensor_parallel=True, managed_flags=MANAGED,
                multi_node=True, tp_across_nodes=True,
                extra_env={"SGLANG_DISABLE_REQUEST_LOGGING": "1"})
