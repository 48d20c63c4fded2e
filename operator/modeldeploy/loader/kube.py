"""The progress channel's one request: a JSON merge patch of one annotation on the loader's own
Job, with the pod's service-account token. Standard library only."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .contract import PROGRESS_ANNOTATION

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class PatchRefused(RuntimeError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status


@dataclass(frozen=True)
class JobTarget:
    """Where the progress goes: the API server, a bearer token, and the Job."""

    server: str
    token: str
    namespace: str
    job_name: str
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls, job_name: str, account_dir: Path = SERVICE_ACCOUNT_DIR) -> JobTarget | None:
        """From the pod's mounted token; None outside a cluster or without a token."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token_file, namespace_file = account_dir / "token", account_dir / "namespace"
        if not host or not token_file.is_file() or not namespace_file.is_file():
            return None
        if ":" in host:
            host = f"[{host}]"
        ca = account_dir / "ca.crt"
        return cls(server=f"https://{host}:{port}", token=token_file.read_text().strip(),
                   namespace=namespace_file.read_text().strip(), job_name=job_name,
                   ca_file=str(ca) if ca.is_file() else None)


def job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}"


def patch_job_annotation(target: JobTarget, value: str, *, key: str = PROGRESS_ANNOTATION,
                         timeout: float = 10.0) -> None:
    """Merge-patch `metadata.annotations[key] = value` on the Job; PatchRefused on any HTTP
    error (403 where the token may not), OSError where the server cannot be reached."""
    merge_patch(target, job_path(target.namespace, target.job_name),
                {"metadata": {"annotations": {key: value}}}, timeout=timeout)


def merge_patch(target: JobTarget, path: str, patch: dict[str, object], *,
                timeout: float = 10.0) -> None:
    """One JSON merge patch of the object at `path`, with the target's token."""
    url = f"{target.server.rstrip('/')}{path}"
    body = json.dumps(patch).encode()
    request = urllib.request.Request(url, data=body, method="PATCH", headers={
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "application/merge-patch+json",
        "Accept": "application/json",
    })
    context = ssl.create_default_context(cafile=target.ca_file)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise PatchRefused(error.code, error.reason) from None
