"""The ModelDeployment resource (modeldeploy.dev/v1alpha1) as pydantic models.

This module is the one source of truth for the API: ``crds/`` is generated from it
(see ``crd.py``). Field names are the camelCase names users write in YAML.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

QUANTITY_PATTERN = r"^([+]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A ModelDeployment's name becomes a Service name, which must be a DNS-1035 label.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63
NAME_RULE_MESSAGE = ("metadata.name must be a DNS-1035 label (lower case letters, digits and "
                     "'-', starting with a letter, at most 63 characters): it names the Service")

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]


class Engine(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TRANSFORMERS = "transformers"


# Engine preference when the spec names none: the fastest the catalog allows.
ENGINE_PREFERENCE: tuple[Engine, ...] = (Engine.VLLM, Engine.SGLANG, Engine.TRANSFORMERS)


class ModelFormat(StrEnum):
    PYTORCH = "pytorch"
    GPTQ = "gptq"
    AWQ = "awq"
    FP8 = "fp8"


class Hub(StrEnum):
    HUGGINGFACE = "huggingface"
    MODELSCOPE = "modelscope"


class AccessMode(StrEnum):
    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class RetainPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


class Phase(StrEnum):
    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    STARTING = "Starting"
    READY = "Ready"
    FAILED = "Failed"
    INVALID = "Invalid"
    SCALED_TO_ZERO = "ScaledToZero"
    SCALING_UP = "ScalingUp"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=False)


class SecretKeyRef(_Model):
    """A key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(default="token", min_length=1, max_length=253,
                     description="Key inside the Secret.")


class ConfigMapKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the ConfigMap.")


class EnvVarSource(_Model):
    secretKeyRef: SecretKeyRef | None = Field(default=None, description="A Secret's key.")
    configMapKeyRef: ConfigMapKeyRef | None = Field(default=None,
                                                    description="A ConfigMap's key.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
            "message": "valueFrom takes exactly one of secretKeyRef or configMapKeyRef",
        }]},
    )


class EnvVar(_Model):
    """An environment variable for the engine container."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(default=None, max_length=32768)
    valueFrom: EnvVarSource | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!(has(self.value) && has(self.valueFrom))",
            "message": "an env entry takes value or valueFrom, not both",
        }]},
    )


class Toleration(_Model):
    key: str | None = Field(default=None, max_length=316)
    operator: str | None = Field(default=None, pattern=r"^(Exists|Equal)$")
    value: str | None = Field(default=None, max_length=63)
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    tolerationSeconds: int | None = None


class GPUSpec(_Model):
    """How many GPUs a replica gets and where it may run."""

    count: int | None = Field(
        default=None, ge=1, le=64,
        description="GPUs per replica. Left out: sized from the model's weights and the usable "
                    "memory of one GPU. When given it is validated the same way.")
    nodes: int | None = Field(
        default=None, ge=1, le=16,
        description="Nodes per replica. Left out: one node when the replica's GPUs fit on one "
                    "(the operator's maxGpusPerNode), else the fewest nodes that hold them. "
                    "More than one is served by a LeaderWorkerSet (vLLM or SGLang) and needs "
                    "cache.accessMode ReadWriteMany.")
    memoryGiB: float | None = Field(
        default=None, gt=0, le=1024,
        description="Memory of one GPU in GiB (default: the operator's, 80).")
    resourceName: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=LABEL_KEY_PATTERN,
        description="Extended resource that counts GPUs on the nodes (default: the "
                    "operator's, nvidia.com/gpu).")
    nodeSelector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a serving pod requires, e.g. "
                                          "nvidia.com/gpu.product.")
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32,
        description="Tolerations of serving pods (default: the operator's GPU taint toleration).")


class CacheSpec(_Model):
    """The PVC that holds the downloaded weights, shared by deployments of the same weights."""

    size: Quantity | None = Field(
        default=None, description="PVC size (default: the weights' size plus a margin).")
    storageClassName: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="StorageClass of the cache PVC (default: the operator's, else the "
                    "cluster's default class).")
    accessMode: AccessMode | None = Field(
        default=None, description="Access mode of the cache PVC (default: the operator's, "
                                  "ReadWriteOnce). Replicas on several nodes need ReadWriteMany.")
    retainPolicy: RetainPolicy = Field(
        default=RetainPolicy.DELETE,
        description="Delete: the cache goes with its last ModelDeployment. Retain: it stays.")


class ResourceList(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class ResourcesSpec(_Model):
    """CPU and memory of the engine container (GPUs are set by gpu)."""

    requests: ResourceList | None = None
    limits: ResourceList | None = None


class AutoscalingSpec(_Model):
    """Replicas set by the gateway's autoscaler (or your own HPA/KEDA) instead of `replicas`."""

    minReplicas: int = Field(
        default=1, ge=0, le=1000,
        description="Fewest replicas; 0 scales to zero when idle (a request starts one).")
    maxReplicas: int = Field(default=1, ge=1, le=1000, description="Most replicas.")
    targetInFlightPerReplica: int = Field(
        default=8, ge=1, le=100000,
        description="In-flight requests per replica the autoscaler aims for.")
    scaleDownDelaySeconds: int = Field(
        default=300, ge=0, le=86400,
        description="How long the load must stay low before replicas are removed.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        }]},
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalingSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError(f"autoscaling.minReplicas ({self.minReplicas}) must not exceed "
                             f"autoscaling.maxReplicas ({self.maxReplicas})")
        return self


class ModelDeploymentSpec(_Model):
    """What to serve, named by the catalog's coordinates."""

    model: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Catalog model name, e.g. deepseek-v2-chat (see `modeldeploy catalog list`).")
    sizeInBillions: float = Field(gt=0, le=10000,
                                  description="Model size in billions of parameters, e.g. 16.")
    format: ModelFormat = Field(default=ModelFormat.PYTORCH, description="Weight format.")
    quantization: str = Field(
        default="none", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$",
        description="Quantization: none, 8-bit, 4-bit (load-time, pytorch format) or the "
                    "format's own (e.g. Int4 for gptq).")
    engine: Engine | None = Field(
        default=None, description="Serving engine. Left out: the fastest the catalog allows "
                                  "(vllm, then sglang, then transformers).")
    replicas: int = Field(default=1, ge=0, le=1000,
                          description="Serving replicas (ignored when autoscaling is set).")
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Let the gateway's autoscaler (or an HPA) set the replicas: the operator "
                    "then leaves the Deployment's replicas alone.")
    hub: Hub = Field(default=Hub.HUGGINGFACE, description="Where the weights are downloaded from.")
    revision: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$",
        description="Hub revision (commit or branch). Default: the catalog's pinned revision.")
    hubTokenSecretRef: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the hub token for gated models "
                                  "(HF_TOKEN / MODELSCOPE_API_TOKEN). Never inline.")
    gpu: GPUSpec = Field(default_factory=GPUSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    resources: ResourcesSpec | None = None
    engineArgs: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64,
        description="Extra engine arguments appended to the command line.")
    env: list[EnvVar] = Field(default_factory=list, max_length=64,
                              description="Extra environment variables of the engine container.")
    image: str | None = Field(default=None, min_length=1, max_length=512,
                              description="Engine image override.")
    maxModelLen: int | None = Field(
        default=None, ge=128, le=10_000_000,
        description="Context length the engine allocates (default: the catalog's).")
    servedModelName: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="Model name clients send (default: the ModelDeployment's name).")
    port: int = Field(default=8000, ge=1, le=65535, description="Service port.")
    podLabels: dict[str, str] = Field(default_factory=dict,
                                      description="Extra labels of serving pods.")
    podAnnotations: dict[str, str] = Field(default_factory=dict,
                                           description="Extra annotations of serving pods.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": [
            {
                "rule": "self.format != 'pytorch' || "
                        "self.quantization in ['none', '8-bit', '4-bit']",
                "message": "format pytorch takes quantization none, 8-bit or 4-bit",
            },
        ]},
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class ResolvedPlan(_Model):
    """What the operator resolved the spec to."""

    modelId: str | None = None
    revision: str | None = None
    hub: Hub | None = None
    engine: Engine | None = None
    image: str | None = None
    gpusPerReplica: int | None = None
    tensorParallelSize: int | None = None
    nodesPerReplica: int | None = None
    pipelineParallelSize: int | None = None
    split: str | None = None
    maxModelLen: int | None = None
    cacheClaim: str | None = None
    servedModelName: str | None = None


class DownloadStatus(_Model):
    """The weight download's progress, as the loader reports it (while it runs)."""

    bytesDone: int | None = None
    bytesTotal: int | None = None
    percent: int | None = None
    bytesPerSecond: int | None = None
    etaSeconds: int | None = None
    filesDone: int | None = None
    filesTotal: int | None = None
    updated: str | None = None


class ModelDeploymentStatus(_Model):
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    resolved: ResolvedPlan | None = None
    endpoint: str | None = None
    download: DownloadStatus | None = None
    replicas: int | None = None
    readyReplicas: int | None = None
    observedGeneration: int | None = None
