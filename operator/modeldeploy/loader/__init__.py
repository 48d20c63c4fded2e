"""The weight loader: fills a weight-cache volume from a model hub, resumably and verified.

Run as `python -m modeldeploy.loader --hub=huggingface --model-id=ORG/NAME --revision=REV
--target=/cache` in the download Job's pod. It imports nothing of the operator; the operator
imports from here what the two sides share: the command line (`loader_command`), the
progress channel's RBAC (`download_rbac`) and the reading of progress (`parse_progress`,
`progress_message`, `progress_status`).
"""

from __future__ import annotations

from .contract import (
    DOWNLOAD_EXCLUDES,
    MARKER_FILE,
    PROGRESS_ANNOTATION,
    WEIGHTS_DIR,
    InvalidArgument,
    validate_model_id,
    validate_revision,
)
from .manifests import (
    download_container_settings,
    download_failure_policy,
    download_pod_settings,
    download_rbac,
    loader_command,
)
from .progress import Progress, parse_progress, progress_message, progress_status

__all__ = [
    "DOWNLOAD_EXCLUDES",
    "MARKER_FILE",
    "PROGRESS_ANNOTATION",
    "WEIGHTS_DIR",
    "InvalidArgument",
    "Progress",
    "download_container_settings",
    "download_failure_policy",
    "download_pod_settings",
    "download_rbac",
    "loader_command",
    "parse_progress",
    "progress_message",
    "progress_status",
    "validate_model_id",
    "validate_revision",
]
