"""Every condition type and reason the operator sets, and the error that carries a reason.

Reasons are CamelCase, as the Kubernetes API conventions ask. The planner's reasons explain a
spec that cannot be served (phase ``Invalid``); the others explain where a served model stands.
"""

from __future__ import annotations

RESOLVED = "Resolved"
CACHE_READY = "CacheReady"
AVAILABLE = "Available"
DEGRADED = "Degraded"
CONDITION_TYPES = (RESOLVED, CACHE_READY, AVAILABLE, DEGRADED)


class Reason:
    """Why the planner refused a spec (the ``Resolved`` condition, phase ``Invalid``)."""

    UNKNOWN_MODEL = "UnknownModel"
    UNKNOWN_SPEC = "UnknownSpec"
    UNKNOWN_QUANTIZATION = "UnknownQuantization"
    ENGINE_NOT_ALLOWED = "EngineNotAllowed"
    ENGINE_TOO_OLD = "EngineTooOld"
    HUB_NOT_AVAILABLE = "HubNotAvailable"
    NO_GPU_FITS = "NoGPUFits"
    INVALID_GPU_COUNT = "InvalidGPUCount"
    INVALID_ENGINE_ARGS = "InvalidEngineArgs"
    INVALID_MAX_MODEL_LEN = "InvalidMaxModelLen"
    IMAGE_NOT_CONFIGURED = "ImageNotConfigured"
    INVALID_CACHE_SIZE = "InvalidCacheSize"
    INVALID_REVISION = "InvalidRevision"
    INVALID_SPEC = "InvalidSpec"
    ENGINE_NOT_MULTI_NODE = "EngineNotMultiNode"
    CACHE_NOT_SHARED = "CacheNotShared"


class Why:
    """Where a resolved ModelDeployment stands (``CacheReady``, ``Available``, ``Degraded``)."""

    RESOLVED = "Resolved"
    CACHE_COMPLETE = "CacheComplete"
    DOWNLOADING = "Downloading"
    DOWNLOAD_FAILED = "DownloadFailed"
    BINDING = "WaitingForVolume"
    CACHE_PENDING = "CachePending"
    SECRET_MISSING = "SecretMissing"
    WAITING_FOR_CACHE = "WaitingForCache"
    CACHE_DELETED = "CacheDeleted"
    CACHE_CLAIM_DIFFERS = "CacheClaimDiffers"
    STARTING = "Starting"
    UNSCHEDULABLE = "Unschedulable"
    CRASH_LOOP = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    QUOTA_EXCEEDED = "QuotaExceeded"
    FAILED_CREATE = "FailedCreate"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    ERR_IMAGE_PULL = "ErrImagePull"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    CONTAINER_CREATE_ERROR = "CreateContainerError"
    READY = "Ready"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    ALL_REPLICAS_READY = "AllReplicasReady"
    SCALED_TO_ZERO = "ScaledToZero"
    INVALID = Reason.INVALID_SPEC
    API_ERROR = "APIError"
    # a name the operator would use is held by an object that is not its own
    NAME_CONFLICT = "NameConflict"
    # the API server refused the write of one child (the others are still written)
    APPLY_FAILED = "ApplyFailed"
    RECONCILE_ERROR = "ReconcileError"
    LWS_MISSING = "LeaderWorkerSetMissing"


# Reasons of conditions that are not (yet) true on the normal way to Ready: no Warning event.
PROGRESS_REASONS = frozenset({Why.DOWNLOADING, Why.BINDING, Why.STARTING,
                              Why.WAITING_FOR_CACHE, Why.SCALED_TO_ZERO})


class PlanError(ValueError):
    """A ModelDeployment that cannot be served as written; the message says why and what is."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
