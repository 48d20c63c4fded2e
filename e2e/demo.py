"""`make demo`: the operator at work on a real control plane, with simulated GPU nodes.

Starts the e2e control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler on
127.0.0.1; GPU nodes played by kwok), installs the CRD, runs `modeldeploy run`, applies the seed
examples and shows them going through their phases in a table that updates in place. Once every
one is Available it says what to try and keeps the cluster up until Ctrl-C, which stops every
process it started.

    python e2e/demo.py            # the state folder: $MODELDEPLOY_DEMO_DIR,
                                  # default ${XDG_RUNTIME_DIR:-/tmp}/modeldeploy-demo
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Cluster, build_binaries, start_cluster
from kubeapi import ApiClient, ApiError, Credentials
from nodes import H100_80GB, NODES, NodeSpec
from processes import Process, spawn, stop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMESPACE = "demo"
EXAMPLES = ROOT / "examples"
GROUP_PATH = "/apis/modeldeploy.dev/v1alpha1"
STATE_FILE = "demo.json"
# A second 8-GPU machine besides the harness's own nodes, so that every seed example fits at once
# (they ask for 14 GPUs; the harness's nodes have 10).
EXTRA_NODE = NodeSpec(name="gpu-8x80-b", address="10.240.0.5", cpu="192", memory="2048Gi",
                      pods=110, gpus=8, gpu_product=H100_80GB[0], gpu_memory_mib=H100_80GB[1])
# kwok plays each download Job's pod: Running, then Succeeded 2-8 s later (a real download of
# these weights takes minutes to hours), so that the phases can be watched.
OPERATOR_CONFIG = {"downloadPodAnnotations": {
    "pod-complete.stage.kwok.x-k8s.io/delay": "2s",
    "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "8s"}}
REFRESH_SECONDS = 0.5


def default_workdir() -> Path:
    default = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "modeldeploy-demo"
    return Path(os.environ.get("MODELDEPLOY_DEMO_DIR") or default)


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: stop everything the demo started."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


# ---------------------------------------------------------------------------------------------
# the screen: log lines scroll, the table below them is redrawn in place on a terminal


class Screen:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty() and os.environ.get("TERM", "dumb") != "dumb"
        self.drawn = 0  # lines of the live block on the screen now
        self.last_block: list[str] = []

    def width(self) -> int:
        return shutil.get_terminal_size((120, 40)).columns

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def log(self, line: str = "") -> None:
        self._erase()
        self.out.write(line + "\n")
        if self.live and self.last_block:
            self._draw(self.last_block)
        self.out.flush()

    def show(self, block: list[str]) -> None:
        """Redraws the live block (a terminal), or prints it when it changed (a log)."""
        width = self.width()
        block = [line[: width - 1] for line in block]
        if block == self.last_block:
            return
        self.last_block = block
        if self.live:
            self._erase()
            self._draw(block)
        else:
            self.out.write("\n".join(block) + "\n")
        self.out.flush()

    def _draw(self, block: list[str]) -> None:
        self.out.write("\n".join(block) + "\n")
        self.drawn = len(block)

    def freeze(self) -> None:
        """Leaves the live block on the screen as it is; later output goes below it."""
        self.drawn = 0
        self.last_block = []


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class Timing:
    applied: float
    available: float | None = None


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def is_available(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    fresh = status.get("observedGeneration") == md["metadata"].get("generation")
    return fresh and _conditions(status).get("Available", {}).get("status") == "True"


def progress(md: dict[str, Any]) -> str:
    """A bar of the three steps (plan, weights, serving) and what the current step says."""
    status = md.get("status") or {}
    conditions = _conditions(status)
    steps = [conditions.get(kind, {}) for kind in ("Resolved", "CacheReady", "Available")]
    done = 0
    for step in steps:
        if step.get("status") != "True":
            break
        done += 1
    bar = "[" + "#" * done + "-" * (3 - done) + "]"
    if not status:
        return f"{bar} waiting for the operator"
    if done < 3:
        current = steps[done]
        return f"{bar} {current.get('message') or current.get('reason') or 'waiting'}"
    degraded = conditions.get("Degraded", {})
    if degraded.get("status") == "True":
        return f"{bar} {degraded.get('reason', '')}: {degraded.get('message', '')}"
    ready, replicas = status.get("readyReplicas", 0), status.get("replicas", 0)
    return f"{bar} {ready}/{replicas} replicas ready"


def table(mds: list[dict[str, Any]], timings: dict[str, Timing], now: float,
          running_clock: bool = True) -> list[str]:
    """One row per ModelDeployment. TIME: seconds from its apply to Available (still counting
    while it is not, when running_clock)."""
    rows = [("NAME", "MODEL", "ENGINE", "GPUS", "PHASE", "TIME", "PROGRESS")]
    for md in mds:
        spec, status = md["spec"], md.get("status") or {}
        resolved = status.get("resolved") or {}
        model = f"{spec['model']} {spec['sizeInBillions']}B"
        if spec.get("quantization", "none") != "none":
            model += f" {spec['quantization']}"
        timing = timings.get(md["metadata"]["name"])
        elapsed = ""
        if timing is not None and (timing.available or running_clock):
            elapsed = f"{(timing.available or now) - timing.applied:.0f}s"
        rows.append((md["metadata"]["name"], model, resolved.get("engine") or "-",
                     str(resolved.get("gpusPerReplica") or "-"), status.get("phase") or "-",
                     elapsed, progress(md)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
            for row in rows]


# ---------------------------------------------------------------------------------------------
# the demo


@dataclass
class Demo:
    workdir: Path
    screen: Screen
    cluster: Cluster | None = None
    operator: Process | None = None
    api: ApiClient | None = None
    timings: dict[str, Timing] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.workdir / "env"

    # -- state of a demo run, so that a second one does not trample the first

    def claim_workdir(self) -> None:
        state = self.workdir / STATE_FILE
        if state.exists():
            recorded = json.loads(state.read_text())
            if _is_alive(int(recorded["pid"]), int(recorded["start_ticks"])):
                raise SystemExit(
                    f"demo: a demo is already running (pid {recorded['pid']}); its kubeconfig is "
                    f"{self.kubeconfig}. Stop it with Ctrl-C in its terminal, or set "
                    "MODELDEPLOY_DEMO_DIR to run another one beside it.")
            self._stop_leftovers()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        state.write_text(json.dumps({"pid": os.getpid(),
                                     "start_ticks": _start_ticks(os.getpid())}) + "\n")

    def _stop_leftovers(self) -> None:
        """Processes of a demo that was killed without its cleanup (SIGKILL): the control plane
        dies with it, but stop what is recorded anyway."""
        cluster_dir = self.workdir / "cluster"
        if (cluster_dir / "cluster.json").exists():
            Cluster.load(cluster_dir).stop()

    # -- steps

    def start(self) -> None:
        say = self.screen.log
        say("modeldeploy demo: the operator on a real Kubernetes control plane on 127.0.0.1")
        say("(etcd, kube-apiserver, kube-controller-manager, kube-scheduler), with SIMULATED GPU")
        say("nodes: kwok plays the nodes and their pods. No GPU, image or weights are needed:")
        say("nothing is pulled or run, and kwok completes each download in a few seconds.")
        say()
        started = time.monotonic()
        bin_dir = build_binaries()  # e2e/cluster/build: progress on stderr, fast when built
        say(f"control plane binaries: {bin_dir} ({time.monotonic() - started:.1f}s)")

        started = time.monotonic()
        self.cluster = start_cluster(self.workdir / "cluster", bin_dir, die_with_parent=True)
        pki = self.cluster.workdir / "pki"
        self.api = ApiClient(Credentials(self.cluster.server, pki / "ca.crt",
                                         pki / "admin.crt", pki / "admin.key"))
        self.api.create("/api/v1/nodes", EXTRA_NODE.manifest())
        self._wait("the extra kwok node Ready", self._extra_node_ready, timeout=60)
        nodes = ", ".join(f"{n.name} ({n.gpus} GPU{'s' if n.gpus > 1 else ''})" if n.gpus
                          else f"{n.name} (CPU)" for n in (*NODES, EXTRA_NODE))
        say(f"control plane up at {self.cluster.server} in {time.monotonic() - started:.1f}s;")
        say(f"  kwok nodes: {nodes}")

        self.cluster.kubectl("create", "namespace", NAMESPACE)
        self.cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             "crd/modeldeployments.modeldeploy.dev")
        self._wait("the default ServiceAccount of the namespace", lambda: self.api is not None
                   and self.api.exists(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
                   timeout=60)
        say(f"CRD installed: modeldeployments.modeldeploy.dev; namespace {NAMESPACE}")
        self._write_kubeconfig()
        self._start_operator()

    def _extra_node_ready(self) -> bool:
        assert self.api is not None
        node = self.api.get(f"/api/v1/nodes/{EXTRA_NODE.name}")
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions") or [])

    def _write_kubeconfig(self) -> None:
        """The admin kubeconfig with the demo's namespace as its default."""
        assert self.cluster is not None
        config = yaml.safe_load(self.cluster.kubeconfig.read_text())
        config["contexts"][0]["context"]["namespace"] = NAMESPACE
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)
        self.env_file.write_text(f"export KUBECONFIG={self.kubeconfig}\n"
                                 f"export PATH={self.cluster.bin_dir}:$PATH\n")

    def _start_operator(self) -> None:
        assert self.cluster is not None
        config = self.workdir / "operator-config.yaml"
        config.write_text(yaml.safe_dump(OPERATOR_CONFIG))
        port = _free_port()
        argv = [sys.executable, "-m", "modeldeploy.cli", "run", "--namespace", NAMESPACE,
                "--config", str(config), "--metrics-port", str(port), "--health-port", "0"]
        log_dir = self.workdir / "logs"
        log_dir.mkdir(exist_ok=True)
        self.operator = spawn("operator", argv, log_dir,
                              env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        operator = self.operator

        def up() -> bool:
            if not operator.is_running():
                raise RuntimeError(f"the operator exited; last lines of {operator.log}:\n"
                                   f"{operator.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                    return True
            except OSError:
                return False

        self._wait("the operator's metrics endpoint", up, timeout=60)
        self.screen.log(f"operator running: modeldeploy run --namespace {NAMESPACE} "
                        f"(log: {operator.log})")

    def _wait(self, what: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiError, OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    # -- the examples

    def apply(self, examples: list[Path]) -> None:
        assert self.cluster is not None
        for path in examples:
            self.cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(path))
            name = yaml.safe_load(path.read_text())["metadata"]["name"]
            self.timings[name] = Timing(applied=time.monotonic())
        self.screen.log("kubectl apply -f " + " -f ".join(
            str(p.relative_to(ROOT)) for p in examples))

    def model_deployments(self) -> list[dict[str, Any]]:
        assert self.api is not None
        found = self.api.items(f"{GROUP_PATH}/namespaces/{NAMESPACE}/modeldeployments")
        return sorted(found, key=lambda md: str(md["metadata"]["name"]))

    def placed(self, names: list[str]) -> bool:
        """Whether a serving pod of each of NAMES has been given a node by the scheduler."""
        assert self.api is not None
        for name in names:
            pods = self.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                                  f"modeldeploy.dev/deployment%3D{name}")
            if not any(p["spec"].get("nodeName") for p in pods):
                return False
        return True

    def run(self) -> None:
        whole_node, rest = split_by_gpus(sorted(EXAMPLES.glob("*.yaml")))
        if whole_node:
            self.screen.log(
                f"{', '.join(p.stem for p in whole_node)} needs all 8 GPUs of one node: applied "
                "first, the others once it has its node")
            self.screen.log("(applied together, the small ones could take a GPU on each 8-GPU "
                            "node and leave it none)")
        self.apply(whole_node or rest)
        waiting = rest if whole_node else []
        names_first = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in whole_node]
        announced = False
        total = len(whole_node) + len(rest)
        while True:
            now = time.monotonic()
            mds = self.model_deployments()
            for md in mds:
                timing = self.timings.get(md["metadata"]["name"])
                if timing is not None and timing.available is None and is_available(md):
                    timing.available = now
            if waiting and self.placed(names_first):
                self.apply(waiting)
                waiting = []
                continue
            available = sum(1 for md in mds if is_available(md))
            block = [*table(mds, self.timings, now, running_clock=self.screen.live), "",
                     f"{available} of {total} Available; Ctrl-C stops the demo"]
            self.screen.show(block)
            if not announced and not waiting and available == total:
                announced = True
                self.announce(mds, now)  # above the table, which stays live below
            time.sleep(REFRESH_SECONDS)

    def announce(self, mds: list[dict[str, Any]], now: float) -> None:
        assert self.cluster is not None
        first = min(t.applied for t in self.timings.values())
        say = self.screen.log
        say()
        say(f"All {len(mds)} ModelDeployments are Available ({now - first:.0f}s after the first "
            "apply). The cluster stays up until Ctrl-C.")
        say()
        say("Try, in another terminal (the pinned kubectl, and a kubeconfig whose namespace is "
            f"{NAMESPACE}):")
        say(f"  source {self.env_file}")
        say("  kubectl get md                          # model, size, engine, GPUs, phase")
        say("  kubectl describe md deepseek-v2-lite    # conditions, resolved plan, events")
        say("  kubectl get pvc,jobs,deploy,svc,pods -o wide   # what the operator made")
        say("  kubectl get md deepseek-v2-lite -o jsonpath='{.status.endpoint}'; echo")
        say("  kubectl delete md deepseek-vl2-tiny     # its Deployment, Service and cache go too")
        say(f"  kubectl apply -f {EXAMPLES.relative_to(ROOT)}/deepseek-vl2-tiny.yaml   # and back")
        say(f"Or without sourcing: KUBECONFIG={self.kubeconfig} "
            f"{self.cluster.bin_dir}/kubectl get md")
        say()
        say("Each endpoint (http://NAME.demo.svc.cluster.local:8000/v1) is a real Service, but "
            "no engine answers behind it: the pods are simulated.")
        assert self.operator is not None
        say(f"Operator log: {self.operator.log}. Press Ctrl-C to stop the operator and the "
            "control plane.")
        say()

    def stop(self) -> None:
        """Stops the operator, then the control plane; removes the state folder."""
        stopped = []
        if self.operator is not None:
            stop(self.operator)
            stopped.append("operator")
            self.operator = None
        if self.cluster is not None:
            stopped += [p.name for p in reversed(self.cluster.processes)]
            self.cluster.stop()
            self.cluster = None
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        if stopped:
            self.screen.log(f"stopped: {', '.join(stopped)}. Nothing of the demo is left running.")


def split_by_gpus(examples: list[Path]) -> tuple[list[Path], list[Path]]:
    """The examples whose replica needs a whole 8-GPU node, and the others (from `modeldeploy
    render`, i.e. the operator's own plan)."""
    whole, rest = [], []
    for path in examples:
        if _gpus_per_replica(path) >= 8:
            whole.append(path)
        else:
            rest.append(path)
    return whole, rest


def _gpus_per_replica(path: Path) -> int:
    from modeldeploy.cli import main as modeldeploy

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = modeldeploy(["render", "--cache-complete", "-f", str(path)])
    if code != 0:
        raise RuntimeError(f"modeldeploy render -f {path} failed with exit code {code}")
    for doc in yaml.safe_load_all(out.getvalue()):
        if doc and doc.get("kind") == "Deployment":
            limits = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            return int(limits.get("nvidia.com/gpu", 0))
    raise RuntimeError(f"modeldeploy render -f {path} made no Deployment")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _is_alive(pid: int, start_ticks: int) -> bool:
    return _start_ticks(pid) == start_ticks


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    handlers = {sig: signal.signal(sig, _raise_stop)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="state folder (default: $MODELDEPLOY_DEMO_DIR, else "
                             "${XDG_RUNTIME_DIR:-/tmp}/modeldeploy-demo)")
    args = parser.parse_args(argv)
    demo = Demo(args.workdir.resolve(), Screen(sys.stdout))
    code = 0
    demo.claim_workdir()  # refuses to run beside a live demo in the same folder
    with stop_signals():
        try:
            demo.start()
            demo.run()
        except Stop as stopping:
            demo.screen.freeze()
            demo.screen.log()
            demo.screen.log(f"{stopping} received: stopping the demo ...")
        except Exception as error:  # a failed start: say what, then clean up
            demo.screen.freeze()
            demo.screen.log(f"demo: error: {error}")
            code = 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
            demo.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
