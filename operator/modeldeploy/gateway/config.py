"""The gateway's settings, its API keys file and the address map."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class GatewayConfigError(Exception):
    """Bad gateway settings or keys file; the message says what was wrong and what is allowed."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    metrics_port: int = 9090
    namespaces: list[str] = field(default_factory=list)
    body_limit: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    request_timeout: float = 3600.0
    scale_up_timeout: float = 600.0
    retries: int = 2
    prefix_affinity_chars: int = 0
    affinity_max_imbalance: int = 4
    autoscale_interval: float = 1.0
    autoscale: bool = True
    api_keys_file: Path | None = None
    address_map: dict[str, str] = field(default_factory=dict)
    access_log: bool = True
    static_routes: Path | None = None
    peers_service: str | None = None  # "namespace/name" of the gateway's own Service


def load_static_routes(path: Path) -> dict[str, list[str]]:
    """``models: [{name: NAME, endpoints: [HOST:PORT, ...]}]``: serve these without a cluster
    (local runs and benchmarks)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise GatewayConfigError(f"cannot read the routes file {path}: {err}") from err
    routes: dict[str, list[str]] = {}
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise GatewayConfigError(f"the routes file {path} must look like 'models: [{{name: "
                                 f"NAME, endpoints: [HOST:PORT, ...]}}]'")
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        endpoints = entry.get("endpoints") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(endpoints, list) or not all(
                isinstance(e, str) and e.rpartition(":")[2].isdigit() for e in endpoints):
            raise GatewayConfigError(f"the routes file {path}: each model needs a name and "
                                     f"endpoints as HOST:PORT strings, got {entry!r}")
        routes[name] = endpoints
    return routes


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Logged instead of the key.")
    key: str = Field(min_length=16, max_length=512)
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                              description="Served model names this key may use; '*': all.")

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class ApiKeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(min_length=1)


def load_api_keys(path: Path) -> dict[str, ApiKey]:
    """Keys by their secret value, from a YAML file (a mounted Secret's key)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise GatewayConfigError(f"cannot read the API keys file {path}: {err.strerror}") \
            from err
    except yaml.YAMLError as err:
        raise GatewayConfigError(f"the API keys file {path} is not valid YAML: {err}") from err
    try:
        parsed = ApiKeysFile.model_validate(data)
    except ValidationError as err:
        where = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
                          for e in err.errors())
        raise GatewayConfigError(
            f"the API keys file {path} must look like 'keys: [{{name: team-a, key: <at least "
            f"16 characters>, models: [model-a, ...] or ['*']}}]': {where}") from err
    keys: dict[str, ApiKey] = {}
    for entry in parsed.keys:
        if entry.key in keys:
            raise GatewayConfigError(f"the API keys file {path} lists one key twice "
                                     f"({keys[entry.key].name} and {entry.name})")
        keys[entry.key] = entry
    return keys


class ApiKeys:
    """The keys file, read again when it changes (a Secret update reaches the mount)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._mtime()
        self.keys = load_api_keys(path)

    def _mtime(self) -> float:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return 0.0

    def reload_if_changed(self) -> None:
        stamp = self._mtime()
        if stamp != self._stamp:
            self._stamp = stamp
            self.keys = load_api_keys(self.path)


def parse_address_map(entries: list[str]) -> dict[str, str]:
    """``FROM=TO`` entries: FROM is ``IP:PORT`` or ``*:PORT`` (an endpoint as the
    EndpointSlices list it), TO the ``HOST:PORT`` the gateway connects to instead."""
    mapping: dict[str, str] = {}
    for entry in entries:
        source, sep, target = entry.partition("=")
        if not sep or ":" not in source or ":" not in target or \
                not source.rpartition(":")[2].isdigit() or \
                not target.rpartition(":")[2].isdigit():
            raise GatewayConfigError(
                f"--address-map {entry!r}: expected FROM=TO with FROM 'IP:PORT' or '*:PORT' "
                f"and TO 'HOST:PORT', e.g. 10.0.0.7:8000=127.0.0.1:41001")
        mapping[source] = target
    return mapping
