"""The simulated nodes of the e2e cluster. kwok keeps them Ready and plays their pods.

The names and labels are relied on by the operator's e2e tests: keep them stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
H100_80GB = ("NVIDIA-H100-80GB-HBM3", 81920)
A100_40GB = ("NVIDIA-A100-SXM4-40GB", 40960)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str
    cpu: str
    memory: str
    pods: int
    gpus: int = 0
    gpu_product: str = ""
    gpu_memory_mib: int = 0

    def labels(self) -> dict[str, str]:
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        if self.gpus:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
                "nvidia.com/gpu.count": str(self.gpus),
            }
        return labels

    def resources(self) -> dict[str, str]:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": "2Ti",
        }
        if self.gpus:
            resources[GPU_RESOURCE] = str(self.gpus)
        return resources

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.labels(),
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": [GPU_TAINT] if self.gpus else []},
            "status": {
                "capacity": self.resources(),
                "allocatable": self.resources(),
                "addresses": [
                    {"type": "InternalIP", "address": self.address},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


def _gpu_node(name: str, address: str, count: int, gpu: tuple[str, int]) -> NodeSpec:
    per_gpu_cpu, per_gpu_memory_gib = 24, 256  # the proportions of a DGX-class machine
    return NodeSpec(
        name=name,
        address=address,
        cpu=str(per_gpu_cpu * count),
        memory=f"{per_gpu_memory_gib * count}Gi",
        pods=110,
        gpus=count,
        gpu_product=gpu[0],
        gpu_memory_mib=gpu[1],
    )


NODES: tuple[NodeSpec, ...] = (
    _gpu_node("gpu-8x80", "10.240.0.1", 8, H100_80GB),  # 192 cpu, 2Ti
    _gpu_node("gpu-1x80", "10.240.0.2", 1, H100_80GB),
    _gpu_node("gpu-1x40", "10.240.0.3", 1, A100_40GB),
    # stands for a pool of CPU machines: room for benchmarks of ~1000 small pods
    NodeSpec(name="cpu-0", address="10.240.0.4", cpu="512", memory="2Ti", pods=2000),
)

# Added only to a cluster started with the LeaderWorkerSet controller: a model larger than one
# node is served by a group of pods, one per node (8 x 40 GB each, as A100-40GB machines).
LWS_NODES: tuple[NodeSpec, ...] = (
    _gpu_node("gpu-8x40-a", "10.240.0.5", 8, A100_40GB),
    _gpu_node("gpu-8x40-b", "10.240.0.6", 8, A100_40GB),
)
