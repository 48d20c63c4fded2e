"""The ModelDeployment resource (modeldeploy.dev/v1alpha1) as pydantic models.

This module is the one source of truth for the API: ``crds/`` is generated from it
(see ``crd.py``). Field names are the camelCase names users write in YAML.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.config import JsonDict

from .quantity import quantity_value

# Kubernetes' own grammars (k8s.io/apimachinery: resource.Quantity, validation.IsQualifiedName,
# IsValidLabelValue, IsDNS1123Subdomain, IsConfigMapKey), so that the API server refuses at
# admission what it would refuse later in a child object.
QUANTITY_PATTERN = r"^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
# a size in bytes for a volume: no exponent, no fractions of a byte unit like "m"
BYTES_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
# "[.]", not an escaped dot: the pattern also goes into CEL string literals
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS_SUBDOMAIN_PATTERN = f"^{DNS_SUBDOMAIN}$"
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = f"^({DNS_SUBDOMAIN}/)?{_NAME_PART}$"
LABEL_KEY_MAX_LENGTH = 253 + 1 + 63
LABEL_VALUE_PATTERN = f"^({_NAME_PART})?$"
# an extended resource: a domain-prefixed name outside kubernetes.io (nvidia.com/gpu)
EXTENDED_RESOURCE_PATTERN = f"^{DNS_SUBDOMAIN}/{_NAME_PART}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A ModelDeployment's name becomes a Service name, which must be a DNS-1035 label.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63
NAME_RULE_MESSAGE = ("metadata.name must be a DNS-1035 label (lower case letters, digits and "
                     "'-', starting with a letter, at most 63 characters): it names the Service")

# A quantity is a string or, as YAML gives `cpu: 4`, a whole number (int-or-string, as the
# Kubernetes API has it).
Quantity = Annotated[
    Annotated[int, Field(ge=0, le=2**53)] | Annotated[str, Field(pattern=QUANTITY_PATTERN,
                                                                 max_length=64)],
    WithJsonSchema({"x-kubernetes-int-or-string": True, "x-kubernetes-validations": [{
        "rule": f"type(self) == int ? self >= 0 : (size(self) <= 64 && "
                f"self.matches('{QUANTITY_PATTERN}'))",
        "message": "must be a Kubernetes quantity, such as 4, 500m, 16Gi or 1.5G"}]}),
]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN, max_length=LABEL_KEY_MAX_LENGTH)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
# Maps of labels: the keys' rule as CEL (a structural schema has no propertyNames).
MAP_ENTRIES_MAX = 64


def _keys_rule(what: str) -> JsonDict:
    return {"x-kubernetes-validations": [
        {"rule": f"self.all(k, k.matches('{LABEL_KEY_PATTERN}') && "
                 "(!k.contains('/') || k.indexOf('/') <= 253))",
         "message": f"{what} keys must be qualified names: an optional DNS subdomain prefix "
                    "(at most 253 characters) and '/', then at most 63 letters, digits, '-', "
                    "'_' or '.', starting and ending with a letter or digit "
                    "(e.g. example.com/team)"}],
        "maxProperties": MAP_ENTRIES_MAX}


def _secret_key_rule(kind: str) -> JsonDict:
    return {"x-kubernetes-validations": [{
        "rule": "self.key != '.' && !self.key.startsWith('..')",
        "message": f"{kind} key must not be '.' or start with '..'"}]}


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

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                      description="Name of the Secret.")
    key: str = Field(default="token", min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN,
                     description="Key inside the Secret (letters, digits, '-', '_', '.').")

    model_config = ConfigDict(extra="forbid", json_schema_extra=_secret_key_rule("a Secret"))

    @model_validator(mode="after")
    def _key_not_dots(self) -> SecretKeyRef:
        _check_key(self.key, "a Secret")
        return self


class ConfigMapKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                      description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN,
                     description="Key inside the ConfigMap (letters, digits, '-', '_', '.').")

    model_config = ConfigDict(extra="forbid", json_schema_extra=_secret_key_rule("a ConfigMap"))

    @model_validator(mode="after")
    def _key_not_dots(self) -> ConfigMapKeyRef:
        _check_key(self.key, "a ConfigMap")
        return self


def _check_key(key: str, kind: str) -> None:
    if key == "." or key.startswith(".."):
        raise ValueError(f"{kind} key must not be '.' or start with '..'")


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
    key: str | None = Field(default=None, max_length=LABEL_KEY_MAX_LENGTH,
                            pattern=LABEL_KEY_PATTERN)
    operator: str | None = Field(default=None, pattern=r"^(Exists|Equal)$")
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN)
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    tolerationSeconds: int | None = Field(default=None, ge=-(2**53), le=2**53)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || "
                 "self.value == ''",
         "message": "a toleration with operator Exists takes no value"},
        {"rule": "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
         "message": "a toleration without a key must have operator Exists"},
        {"rule": "!has(self.tolerationSeconds) || (has(self.effect) && "
                 "self.effect == 'NoExecute')",
         "message": "tolerationSeconds needs effect NoExecute"},
    ]})

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator Exists")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


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
        default=None, min_length=1, max_length=LABEL_KEY_MAX_LENGTH,
        pattern=EXTENDED_RESOURCE_PATTERN,
        description="Extended resource that counts GPUs on the nodes, a domain-prefixed name "
                    "outside kubernetes.io (default: the operator's, nvidia.com/gpu).",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!self.matches('^([^/]*[.])?kubernetes[.]io/')",
            "message": "gpu.resourceName must be an extended resource (e.g. nvidia.com/gpu, "
                       "amd.com/gpu), not a name in the kubernetes.io domain"}]})
    nodeSelector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Node labels a serving pod requires, e.g. "
                                          "nvidia.com/gpu.product.",
        json_schema_extra=_keys_rule("gpu.nodeSelector"))
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32,
        description="Tolerations of serving pods (default: the operator's GPU taint toleration).")


class CacheSpec(_Model):
    """The PVC that holds the downloaded weights, shared by deployments of the same weights."""

    size: str | None = Field(
        default=None, max_length=64, pattern=BYTES_PATTERN,
        description="PVC size in bytes with an optional unit, e.g. 40Gi (default: the "
                    "weights' size plus a margin).")
    storageClassName: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
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

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourcesSpec:
        for name in ("cpu", "memory"):
            asked = getattr(self.requests, name, None) if self.requests else None
            limit = getattr(self.limits, name, None) if self.limits else None
            if asked is None or limit is None:
                continue
            low, high = quantity_value(str(asked)), quantity_value(str(limit))
            if low is not None and high is not None and low > high:
                raise ValueError(f"resources.requests.{name} ({asked}) must not exceed "
                                 f"resources.limits.{name} ({limit})")
        return self


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
    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=r"^\S+$",
                              description="Engine image override.")
    maxModelLen: int | None = Field(
        default=None, ge=128, le=10_000_000,
        description="Context length the engine allocates (default: the catalog's).")
    servedModelName: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="Model name clients send (default: the ModelDeployment's name).")
    port: int = Field(default=8000, ge=1, le=65535, description="Service port.")
    podLabels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Extra labels of serving pods.",
        json_schema_extra=_keys_rule("podLabels"))
    podAnnotations: dict[LabelKey, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict, description="Extra annotations of serving pods.",
        json_schema_extra=_keys_rule("podAnnotations"))

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
