"""Errors a user can cause, with the reason constants status conditions carry."""

from __future__ import annotations


class Reason:
    """Condition reasons (CamelCase, as Kubernetes conventions ask)."""

    UNKNOWN_MODEL = "UnknownModel"
    UNKNOWN_SPEC = "UnknownSpec"
    UNKNOWN_QUANTIZATION = "UnknownQuantization"
    ENGINE_NOT_ALLOWED = "EngineNotAllowed"
    HUB_NOT_AVAILABLE = "HubNotAvailable"
    NO_GPU_FITS = "NoGPUFits"
    INVALID_GPU_COUNT = "InvalidGPUCount"
    INVALID_ENGINE_ARGS = "InvalidEngineArgs"
    INVALID_MAX_MODEL_LEN = "InvalidMaxModelLen"
    IMAGE_NOT_CONFIGURED = "ImageNotConfigured"
    INVALID_SPEC = "InvalidSpec"


class PlanError(ValueError):
    """A ModelDeployment that cannot be served as written; the message says why and what is."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
