"""A real Kubernetes control plane on 127.0.0.1 for the e2e tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries (built
by ./build from the pinned Go modules); kwok plays the nodes and their pods; a small fake
provisioner binds PVCs of the default StorageClass. Everything runs as child processes, each in
its own process group, with its log in the work folder.

    cluster = start_cluster(Path("/tmp/e2e-cluster"))   # builds the binaries if needed
    cluster.kubectl("get", "nodes")
    cluster.stop()
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import components
import lws
from certs import ClientIdentity, Pki, make_pki
from components import Kubeconfigs, Ports
from kubeapi import ApiClient, ApiError, Credentials
from nodes import LWS_NODES, NODES, NodeSpec
from processes import Process, spawn, stop, stop_all
from provisioner import storage_class_manifest

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
KWOK_STAGES = HERE / "kwok-stages.yaml"
STATE_FILE = "cluster.json"

CLIENTS = [
    ClientIdentity("admin", "modeldeploy-e2e-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
    ClientIdentity("provisioner", "modeldeploy-fake-provisioner", ("system:masters",)),
    ClientIdentity("lws", "lws-controller-manager", ("system:masters",)),
    ClientIdentity(components.FRONT_PROXY_CLIENT, components.FRONT_PROXY_CLIENT),
]


class ClusterStartError(RuntimeError):
    """A component did not come up; the message carries the tail of its log."""


class CommandFailed(subprocess.CalledProcessError):
    """A kubectl or helm call that failed; unlike its base class, its message shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()[-2000:]}"


def build_binaries() -> Path:
    """Runs ./build (fast when the binaries exist) and returns the bin folder it prints."""
    result = subprocess.run(
        [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ClusterStartError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(lines[-1])


@dataclass
class Cluster:
    workdir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    processes: list[Process] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG, the cluster's binaries first on PATH, a private helm home."""
        helm_home = self.workdir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def _run(
        self, tool: str, args: tuple[str, ...], input: str | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env(), check=False
        )
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, argv, output=result.stdout, stderr=result.stderr)
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, input, check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, None, check)

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 2) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount NAMESPACE/NAME with a token the
        API server signs (TokenRequest), e.g. to run the operator with its chart's RBAC."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={hours}h"
        ).stdout.strip()
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": f"{namespace}-{name}", "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = f"{namespace}-{name}"
        path = self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def outage(self, name: str, seconds: float) -> None:
        """Kills one component with SIGKILL (as a crash would), keeps it down for SECONDS, then
        starts it again with the same command line and waits until the API answers."""
        index, old = next((i, p) for i, p in enumerate(self.processes) if p.name == name)
        argv = [a.decode() for a in Path(f"/proc/{old.pid}/cmdline").read_bytes().split(b"\0")
                if a]
        stop(old, grace=0)
        time.sleep(seconds)
        self.processes[index] = spawn(name, argv, old.log.parent)
        self.save_state()
        deadline = time.monotonic() + 120
        while self.kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{name} did not come back:\n"
                                        f"{self.processes[index].log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stops every process this cluster started (idempotent)."""
        processes, self.processes = self.processes, []
        stop_all(processes)
        (self.workdir / STATE_FILE).unlink(missing_ok=True)

    def save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "bin_dir": str(self.bin_dir),
            "processes": [process.to_json() for process in self.processes],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> Cluster:
        """The cluster recorded in WORKDIR (by a `start_cluster` in another process)."""
        state = json.loads((workdir / STATE_FILE).read_text())
        return cls(
            workdir=workdir,
            kubeconfig=Path(state["kubeconfig"]),
            server=state["server"],
            bin_dir=Path(state["bin_dir"]),
            processes=[Process.from_json(item) for item in state["processes"]],
        )

    def is_running(self) -> bool:
        return bool(self.processes) and all(process.is_running() for process in self.processes)


# ---------------------------------------------------------------------------------------------
# kubeconfigs


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Pki, client: str) -> Path:
    pair = pki.clients[client]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "modeldeploy-e2e",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca.cert)},
            }
        ],
        "users": [
            {
                "name": client,
                "user": {
                    "client-certificate-data": _b64(pair.cert),
                    "client-key-data": _b64(pair.key),
                },
            }
        ],
        "contexts": [
            {"name": "modeldeploy-e2e", "context": {"cluster": "modeldeploy-e2e", "user": client}}
        ],
        "current-context": "modeldeploy-e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _write_kubeconfigs(directory: Path, server: str, pki: Pki) -> Kubeconfigs:
    directory.mkdir(parents=True, exist_ok=True)
    return Kubeconfigs(
        admin=write_kubeconfig(directory / "admin.kubeconfig", server, pki, "admin"),
        controller_manager=write_kubeconfig(
            directory / "controller-manager.kubeconfig", server, pki, "controller-manager"
        ),
        scheduler=write_kubeconfig(directory / "scheduler.kubeconfig", server, pki, "scheduler"),
        kwok=write_kubeconfig(directory / "kwok.kubeconfig", server, pki, "kwok"),
    )


# ---------------------------------------------------------------------------------------------
# waiting


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _insecure_context() -> ssl.SSLContext:
    """For /healthz of the controller-manager and scheduler: self-signed, loopback only."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Starter:
    """Starts the components one after another; on any failure stops what it started."""

    def __init__(self, workdir: Path, bin_dir: Path, die_with_parent: bool) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.die_with_parent = die_with_parent
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []

    def spawn(self, name: str, argv: list[str]) -> Process:
        process = spawn(name, argv, self.log_dir, die_with_parent=self.die_with_parent)
        self.processes.append(process)
        return process

    def wait(self, what: str, ready: Callable[[], bool], owner: Process, timeout: float) -> None:
        """Polls `ready` until true; fails early, with the log tail, if any component died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if not process.is_running():
                    raise ClusterStartError(
                        f"{process.name} exited while waiting for {what}; "
                        f"last lines of {process.log}:\n{process.log_tail()}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise ClusterStartError(
            f"timed out after {timeout:.0f}s waiting for {what}; "
            f"last lines of {owner.log}:\n{owner.log_tail()}"
        )


def _healthz(port: int) -> Callable[[], bool]:
    url, context = f"https://127.0.0.1:{port}/healthz", _insecure_context()
    return lambda: _http_ok(url, context)


def _api_ready(api: ApiClient) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return str(api.get("/readyz").get("text", "")).strip() == "ok"
        except (ApiError, OSError):
            return False

    return ready


def _api_true(check: Callable[[], bool]) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return check()
        except (ApiError, OSError):
            return False

    return ready


def _nodes_ready(api: ApiClient, nodes: tuple[NodeSpec, ...]) -> bool:
    ready = set()
    for node in api.items("/api/v1/nodes"):
        conditions = node.get("status", {}).get("conditions") or []
        taints = node.get("spec", {}).get("taints") or []
        not_ready_taint = any(t["key"].startswith("node.kubernetes.io/") for t in taints)
        if not not_ready_taint and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        ):
            ready.add(node["metadata"]["name"])
    return ready >= {spec.name for spec in nodes}


def _create(api: ApiClient, path: str, body: dict[str, object]) -> None:
    try:
        api.create(path, body)
    except ApiError as error:
        if error.status != 409:
            raise


# ---------------------------------------------------------------------------------------------
# start


def _start_etcd(starter: _Starter, ports: Ports) -> None:
    argv = components.etcd(starter.bin_dir, starter.workdir / "etcd", ports)
    process = starter.spawn("etcd", argv)
    health = f"http://127.0.0.1:{ports.etcd_client}/health"
    starter.wait("etcd /health", lambda: _http_ok(health), process, timeout=60)


def _start_apiserver(starter: _Starter, pki: Pki, ports: Ports, api: ApiClient) -> None:
    cert_dir = starter.workdir / "kube-apiserver"
    process = starter.spawn(
        "kube-apiserver", components.kube_apiserver(starter.bin_dir, pki, ports, cert_dir)
    )
    starter.wait("kube-apiserver /readyz", _api_ready(api), process, timeout=120)


def _start_controllers(starter: _Starter, pki: Pki, ports: Ports, kubeconfigs: Kubeconfigs) -> None:
    work, bins = starter.workdir, starter.bin_dir
    manager = starter.spawn(
        "kube-controller-manager",
        components.kube_controller_manager(
            bins, pki, ports, work / "kube-controller-manager", kubeconfigs.controller_manager
        ),
    )
    scheduler = starter.spawn(
        "kube-scheduler",
        components.kube_scheduler(bins, ports, work / "kube-scheduler", kubeconfigs.scheduler),
    )
    for process, port in ((manager, ports.controller_manager), (scheduler, ports.scheduler)):
        starter.wait(f"{process.name} /healthz", _healthz(port), process, timeout=60)


def _start_kwok(starter: _Starter, kubeconfigs: Kubeconfigs, api: ApiClient,
                nodes: tuple[NodeSpec, ...]) -> None:
    for node in nodes:
        _create(api, "/api/v1/nodes", node.manifest())
    process = starter.spawn("kwok", components.kwok(starter.bin_dir, kubeconfigs.kwok, KWOK_STAGES))
    starter.wait("kwok nodes Ready", _api_true(lambda: _nodes_ready(api, nodes)), process,
                 timeout=60)


def _crd_established(api: ApiClient, name: str) -> bool:
    crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def _lws_webhooks_answer(api: ApiClient) -> bool:
    """A dry-run create of a LeaderWorkerSet passes through its mutating and validating
    webhooks: it succeeds once the controller serves them."""
    path = f"/apis/{lws.GROUP}/v1/namespaces/default/leaderworkersets?dryRun=All"
    try:
        api.create(path, lws.probe_object("default"))
    except ApiError:
        return False
    return True


def _start_lws(starter: _Starter, pki: Pki, server: str, api: ApiClient) -> None:
    """The LeaderWorkerSet controller: its CRDs, the process, then its webhooks by URL."""
    crds = lws.crd_dir(starter.bin_dir)
    for path in sorted(crds.glob("*.yaml")):
        _create(api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                yaml.safe_load(path.read_text()))
    work = starter.workdir / "lws"
    work.mkdir(parents=True, exist_ok=True)
    kubeconfig = write_kubeconfig(work / "lws.kubeconfig", server, pki, "lws")
    webhook_port, health_port = lws.free_port(), lws.free_port()
    config = lws.write_config(work, pki.ca, webhook_port, health_port)
    owner = starter.processes[-1]
    for name in lws.CRD_NAMES:
        starter.wait(f"CRD {name} Established (from {crds})",
                     _api_true(lambda name=name: _crd_established(api, name)), owner, timeout=60)
    process = starter.spawn("lws-controller", lws.argv(starter.bin_dir, kubeconfig, config))
    ready = f"http://127.0.0.1:{health_port}/readyz"
    starter.wait("lws-controller /readyz", lambda: _http_ok(ready), process, timeout=60)
    for body in lws.webhook_configurations(webhook_port, pki.ca):
        plural = body["kind"].lower() + "s"
        _create(api, f"/apis/admissionregistration.k8s.io/v1/{plural}", body)
    starter.wait("the LeaderWorkerSet webhooks", lambda: _lws_webhooks_answer(api), process,
                 timeout=60)


def _start_provisioner(starter: _Starter, credentials: Credentials, api: ApiClient) -> None:
    _create(api, "/apis/storage.k8s.io/v1/storageclasses", storage_class_manifest())
    argv = [
        sys.executable,
        str(HERE / "provisioner.py"),
        f"--server={credentials.server}",
        f"--ca={credentials.ca}",
        f"--cert={credentials.cert}",
        f"--key={credentials.key}",
    ]
    starter.spawn("fake-provisioner", argv)


def _wait_default_service_account(starter: _Starter, api: ApiClient) -> None:
    manager = next(p for p in starter.processes if p.name == "kube-controller-manager")
    ready = _api_true(lambda: api.exists("/api/v1/namespaces/default/serviceaccounts/default"))
    starter.wait("the default ServiceAccount", ready, manager, timeout=60)


def _client(server: str, pki: Pki, name: str) -> tuple[Credentials, ApiClient]:
    pair = pki.clients[name]
    credentials = Credentials(server, pki.ca.cert, pair.cert, pair.key)
    return credentials, ApiClient(credentials)


def _start_all(starter: _Starter, with_lws: bool) -> Cluster:
    workdir = starter.workdir
    pki = make_pki(workdir / "pki", CLIENTS)
    ports = Ports.free()
    server = f"https://127.0.0.1:{ports.apiserver}"
    kubeconfigs = _write_kubeconfigs(workdir / "kubeconfigs", server, pki)
    _, api = _client(server, pki, "admin")

    _start_etcd(starter, ports)
    _start_apiserver(starter, pki, ports, api)
    _start_controllers(starter, pki, ports, kubeconfigs)
    _start_kwok(starter, kubeconfigs, api, NODES + LWS_NODES if with_lws else NODES)
    _start_provisioner(starter, _client(server, pki, "provisioner")[0], api)
    _wait_default_service_account(starter, api)
    if with_lws:
        _start_lws(starter, pki, server, api)

    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_bytes(kubeconfigs.admin.read_bytes())
    kubeconfig.chmod(0o600)
    return Cluster(workdir, kubeconfig, server, starter.bin_dir, list(starter.processes))


def start_cluster(
    workdir: Path, bin_dir: Path | None = None, *, die_with_parent: bool = True,
    with_lws: bool = False,
) -> Cluster:
    """Starts a cluster whose state lives in WORKDIR (created if missing).

    bin_dir: prebuilt binaries; by default ./build runs first (it only builds what is missing).
    with_lws: also the LeaderWorkerSet controller (its CRDs and webhooks) and two more
    8-GPU nodes (nodes.LWS_NODES) for groups of pods that span nodes.
    die_with_parent: the kernel kills the components when this process dies, even by SIGKILL;
    `up` turns it off so that the cluster outlives it. Either way stop() stops it, and so does
    interpreter exit (atexit) when die_with_parent is on.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    starter = _Starter(workdir, bin_dir or build_binaries(), die_with_parent)
    try:
        cluster = _start_all(starter, with_lws)
    except BaseException:
        stop_all(starter.processes)
        raise
    cluster.save_state()
    if die_with_parent:
        atexit.register(cluster.stop)
    return cluster


def default_state_dir() -> Path:
    """Where `up` keeps its cluster: $MODELDEPLOY_CLUSTER_DIR, else $XDG_RUNTIME_DIR (or /tmp)."""
    default = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "modeldeploy-cluster"
    return Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR") or default)


def stop_cluster(workdir: Path) -> bool:
    """Stops the cluster recorded in WORKDIR; False when none was recorded."""
    if not (workdir / STATE_FILE).exists():
        return False
    Cluster.load(workdir).stop()
    return True
