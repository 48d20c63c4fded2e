"""The e2e tests' helpers, one set: reading and writing objects with the cluster's kubectl,
waiting for a state, and the ModelDeployments the tests apply."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from harness import Cluster

T = TypeVar("T")
MD = "modeldeployment"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60,
             interval: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(found.stdout)
    return obj


def items(cluster: Cluster, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
    found = cluster.kubectl("get", kind, "-n", namespace, "-o", "json", *selector)
    listed: list[dict[str, Any]] = json.loads(found.stdout)["items"]
    return listed


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            found: dict[str, Any] = cond
            return found
    return {}


def apply(cluster: Cluster, namespace: str, doc: dict[str, Any] | str) -> None:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def model_deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name}, "spec": spec}


def lite(name: str, **extra: Any) -> dict[str, Any]:
    return model_deployment(name, model="deepseek-v2-chat", sizeInBillions=16, **extra)


def wait_available(cluster: Cluster, namespace: str, name: str, timeout: int = 90) -> None:
    cluster.kubectl("wait", "-n", namespace, f"{MD}/{name}", "--for=condition=Available",
                    f"--timeout={timeout}s")


def phases(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """The phases the status went through, chained from its "A -> B" events (their
    timestamps have a resolution of one second, too coarse to order them)."""
    events = items(cluster, "events", namespace,
                   f"--field-selector=involvedObject.name={name},reason=Phase")
    steps = dict(e["message"].split(" -> ") for e in events)
    chain = ["New"]
    while chain[-1] in steps and len(chain) <= len(steps):
        chain.append(steps[chain[-1]])
    return chain


def wait_condition(cluster: Cluster, namespace: str, name: str, kind: str,
                   reason: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = condition(get(cluster, MD, namespace, name), kind)
        return found if found.get("reason") == reason else None

    return wait_for(f"{kind} reason {reason} on {name}", reached, timeout=timeout)
