"""Fixtures for tests against the real control plane (see e2e/README.md).

`cluster` starts one control plane per pytest session (building the binaries first if they are
missing: a failed build makes the tests error, never skip); `namespace` gives each test a fresh
namespace and deletes it afterwards (its pods at once, so the next test finds the nodes free).
`lws_cluster` is a second control plane with the LeaderWorkerSet controller and two more 8-GPU
nodes, started only for the tests that ask for it (with `lws_namespace` and `lws_crd`).
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Cluster, start_cluster
from operator_process import OperatorProcess


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = time.monotonic()
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    print(f"\ncluster up in {time.monotonic() - started:.1f}s at {running.server}", flush=True)
    try:
        yield running
    finally:
        running.stop()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"{slug}-{uuid.uuid4().hex[:6]}"


def _wait_for_default_service_account(cluster: Cluster, namespace: str, timeout: float) -> None:
    """Pods are refused until the ServiceAccount controller has made `default`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False)
        if found.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {namespace} after {timeout}s")


@pytest.fixture(scope="session")
def lws_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = time.monotonic()
    running = start_cluster(tmp_path_factory.mktemp("lws-cluster"), with_lws=True)
    print(f"\ncluster with LeaderWorkerSet up in {time.monotonic() - started:.1f}s at "
          f"{running.server}", flush=True)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _fresh_namespace(cluster, request)


@pytest.fixture
def lws_namespace(lws_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _fresh_namespace(lws_cluster, request)


def _fresh_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    cluster.kubectl("create", "namespace", name)
    _wait_for_default_service_account(cluster, name, timeout=30)
    try:
        yield name
    finally:
        _delete_namespace(cluster, name)


def _delete_namespace(cluster: Cluster, name: str) -> None:
    """Deletes the namespace without waiting for the namespace controller (it starts 5 s after
    the request, by design), but frees the nodes at once: once the namespace is Terminating no new
    pod can be created in it, and its pods are removed immediately (grace period 0), so the next
    test finds every GPU free."""
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    cluster.kubectl(
        "delete", "pods", "--all", "-n", name, "--force", "--grace-period=0", "--wait=false"
    )


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The ModelDeployment CRD, installed once per session and established."""
    _install_crd(cluster)


@pytest.fixture(scope="session")
def lws_crd(lws_cluster: Cluster) -> None:
    _install_crd(lws_cluster)


def _install_crd(cluster: Cluster) -> None:
    root = Path(__file__).resolve().parent.parent
    cluster.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    # `kubectl wait` fails at once on a CRD whose status has no conditions yet: ask again
    deadline = time.monotonic() + 60
    while cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/modeldeployments.modeldeploy.dev", check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError("the ModelDeployment CRD was not established in 60s")
        time.sleep(0.5)


@pytest.fixture
def operator(cluster: Cluster, crd: None, namespace: str,
             tmp_path: Path) -> Iterator[OperatorProcess]:
    """`modeldeploy run` watching the test's namespace."""
    running = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        yield running
    finally:
        running.stop()
