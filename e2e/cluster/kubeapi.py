"""A minimal JSON client for the Kubernetes API over HTTPS with a client certificate.

Only what the harness and the fake provisioner need: get, list, create, delete. Tests use
kubectl (Cluster.kubectl) instead, which is the real client.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Credentials:
    server: str
    ca: Path
    cert: Path
    key: Path


class ApiClient:
    def __init__(self, credentials: Credentials, timeout: float = 10.0) -> None:
        self.server = credentials.server.rstrip("/")
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(credentials.ca))
        self._context.load_cert_chain(str(credentials.cert), str(credentials.key))

    def request(self, method: str, path: str, body: JsonObject | None = None) -> JsonObject:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=self.timeout) as r:
                payload = r.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None
        return json.loads(payload) if payload.startswith("{") else {"text": payload}

    def get(self, path: str) -> JsonObject:
        return self.request("GET", path)

    def items(self, path: str) -> list[JsonObject]:
        items: list[JsonObject] = self.get(path).get("items") or []
        return items

    def create(self, path: str, body: JsonObject) -> JsonObject:
        return self.request("POST", path, body)

    def delete(self, path: str) -> JsonObject:
        return self.request("DELETE", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True
