"""The ModelDeployment API: spec and status models, the CRD generated from them, and every
condition reason."""

from .reasons import (
    AVAILABLE,
    CACHE_READY,
    CONDITION_TYPES,
    DEGRADED,
    RESOLVED,
    PlanError,
    Reason,
    Why,
)
from .spec import (
    ENGINE_PREFERENCE,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    NAME_RULE_MESSAGE,
    AccessMode,
    AutoscalingSpec,
    CacheSpec,
    Condition,
    ConditionStatus,
    Engine,
    EnvVar,
    GPUSpec,
    Hub,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelFormat,
    Phase,
    ResolvedPlan,
    RetainPolicy,
    Toleration,
)

__all__ = [
    "AVAILABLE", "CACHE_READY", "CONDITION_TYPES", "DEGRADED", "ENGINE_PREFERENCE",
    "NAME_MAX_LENGTH", "NAME_PATTERN", "NAME_RULE_MESSAGE", "RESOLVED", "AccessMode",
    "AutoscalingSpec",
    "CacheSpec", "Condition", "ConditionStatus", "Engine", "EnvVar", "GPUSpec", "Hub",
    "ModelDeploymentSpec", "ModelDeploymentStatus", "ModelFormat", "Phase", "PlanError",
    "Reason", "ResolvedPlan", "RetainPolicy", "Toleration", "Why",
]
