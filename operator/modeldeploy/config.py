"""Operator-wide defaults (the chart's ConfigMap): images, GPU memory, storage."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .api import AccessMode, Toleration

DEFAULT_IMAGES = {
    "vllm": "vllm/vllm-openai:v0.32.0",
    "sglang": "lmsysorg/sglang:v0.5.23",
    "transformers": "ghcr.io/modeldeploy/transformers:0.1.0",
    "transformers-vl2": "ghcr.io/modeldeploy/transformers-vl2:0.1.0",
}


class OperatorConfig(BaseModel):
    """Defaults a ModelDeployment's spec may override."""

    model_config = ConfigDict(extra="forbid")

    images: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGES),
                                   description="Engine images by engine or engine-variant name.")
    loaderImage: str = "ghcr.io/modeldeploy/loader:0.1.0"
    gpuMemoryGiB: float = Field(default=80, gt=0)
    usableGpuFraction: float = Field(
        default=0.9, gt=0, le=1,
        description="Share of a GPU's memory the engine may use (CUDA context, fragmentation).")
    memoryHeadroom: float = Field(
        default=0.2, ge=0, le=4,
        description="KV cache and activations as a fraction of the weights, unless the catalog "
                    "says otherwise for a family.")
    maxGpusPerNode: int = Field(default=8, ge=1, le=64)
    gpuResourceName: str = "nvidia.com/gpu"
    gpuTolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists",
                                            effect="NoSchedule")])
    storageClassName: str | None = None
    cacheAccessMode: AccessMode = AccessMode.READ_WRITE_ONCE
    cacheMargin: float = Field(default=0.1, ge=0, le=2,
                               description="PVC size margin over the weights' size.")
    shmSizeGiB: int = Field(default=16, ge=1)
    downloadBackoffLimit: int = Field(default=3, ge=0)
    downloadPodAnnotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of download pods (e.g. to keep a "
                                          "service-mesh sidecar out of a Job).")
    clusterDomain: str = "cluster.local"


def load_config(path: Path | None) -> OperatorConfig:
    if path is None:
        return OperatorConfig()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return OperatorConfig.model_validate(raw)
