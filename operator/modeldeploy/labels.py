"""Names, labels and annotations shared by rendering and the controller."""

from __future__ import annotations

from . import GROUP

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "modeldeploy"
DEPLOYMENT_LABEL = f"{GROUP}/deployment"
CACHE_LABEL = f"{GROUP}/cache"
COMPONENT = "app.kubernetes.io/component"

MODEL_ID_ANNOTATION = f"{GROUP}/model-id"
REVISION_ANNOTATION = f"{GROUP}/revision"
HUB_ANNOTATION = f"{GROUP}/hub"
CACHE_COMPLETE_ANNOTATION = f"{GROUP}/cache-complete"
RETAIN_ANNOTATION = f"{GROUP}/retain"
# On a ModelDeployment: a time (RFC 3339, UTC) after which a failed download is tried again.
RETRY_ANNOTATION = f"{GROUP}/retry-download"


def serving_labels(name: str) -> dict[str, str]:
    """The selector of a ModelDeployment's pods and Service (stable across spec changes)."""
    return {DEPLOYMENT_LABEL: name}


def common_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modeldeploy",
        COMPONENT: component,
        MANAGED_BY: MANAGED_BY_VALUE,
    }
