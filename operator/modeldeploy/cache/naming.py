"""Names of the weight cache: one claim per weights (hub, model id, revision), its Job, and
the marker that says the weights are complete."""

from __future__ import annotations

import hashlib
import re

from ..api import Hub

MARKER_FILE = ".modeldeploy-complete"


def cache_claim_name(hub: Hub, model_id: str, revision: str) -> str:
    """One name per weights: readable prefix, hash of the exact coordinates for uniqueness."""
    digest = hashlib.sha256(f"{hub.value}/{model_id}@{revision}".encode()).hexdigest()[:10]
    hub_short = "hf" if hub is Hub.HUGGINGFACE else "ms"
    readable = re.sub(r"[^a-z0-9]+", "-", model_id.split("/", 1)[-1].lower()).strip("-")
    return f"weights-{hub_short}-{readable[:36].rstrip('-')}-{digest}"


def download_job_name(claim_name: str) -> str:
    return f"{claim_name}-dl"


def weights_coordinates(hub: Hub, model_id: str, revision: str) -> str:
    """What the completion marker and the claim's cache-complete annotation hold."""
    return f"{hub.value}/{model_id}@{revision}"
