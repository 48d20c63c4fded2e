"""What the loader and the operator agree on: names, the marker, and valid arguments."""

from __future__ import annotations

import re

# One annotation on the download Job carries the loader's progress (compact JSON).
PROGRESS_ANNOTATION = "modeldeploy.dev/download-progress"
# The weights go to <target>/weights; <target>/.modeldeploy-complete is written last and holds
# `hub/model_id@revision`. Partial files live apart, so the weights folder only ever holds
# verified files.
WEIGHTS_DIR = "weights"
MARKER_FILE = ".modeldeploy-complete"
PARTIAL_DIR = ".modeldeploy-partial"
VERIFIED_FILE = ".modeldeploy-verified.json"
# Checkpoint copies the engines never read (Meta's original/, Mistral's consolidated files).
DOWNLOAD_EXCLUDES = ("original/*", "consolidated*", "*.gguf")
HUBS = ("huggingface", "modelscope")

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")


class InvalidArgument(ValueError):
    """A model id or revision the loader refuses; the message says what is allowed."""


def validate_model_id(model_id: str) -> str:
    if model_id.startswith("-"):
        raise InvalidArgument(f"model id {model_id!r} starts with '-'; a model id is ORG/NAME")
    if ".." in model_id:
        raise InvalidArgument(f"model id {model_id!r} contains '..'; a model id is ORG/NAME")
    if len(model_id) > 200 or not _MODEL_ID.fullmatch(model_id):
        raise InvalidArgument(
            f"model id {model_id!r} is not ORG/NAME of letters, digits, '.', '_' and '-'"
            " (at most 200 characters)")
    return model_id


def validate_revision(revision: str) -> str:
    if revision.startswith("-"):
        raise InvalidArgument(
            f"revision {revision!r} starts with '-'; a revision is a branch, tag or commit hash")
    if ".." in revision:
        raise InvalidArgument(
            f"revision {revision!r} contains '..'; a revision is a branch, tag or commit hash")
    if (len(revision) > 200 or not _REVISION.fullmatch(revision) or revision.startswith("/")
            or revision.endswith("/")):
        raise InvalidArgument(
            f"revision {revision!r} is not a branch, tag or commit hash of letters, digits,"
            " '.', '_', '-' and inner '/' (at most 200 characters)")
    return revision


def coordinates(hub: str, model_id: str, revision: str) -> str:
    """The marker's content: what the cache holds."""
    return f"{hub}/{model_id}@{revision}"
