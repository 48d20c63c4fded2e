"""The LeaderWorkerSet controller (kubernetes-sigs/lws) in the e2e cluster, for the tests that
ask for it.

It runs as a child process like the other components: leader election off, metrics off, its
health probe and its webhook server on 127.0.0.1. Its own certificate management (which
writes a Secret for an in-cluster Service) is off: the harness signs the webhook's serving
certificate with the cluster CA and registers the webhooks by URL. The mutating pod webhook is
what gives every pod of a group LWS_LEADER_ADDRESS, LWS_GROUP_SIZE and LWS_WORKER_INDEX.

The CRDs are the ones of the pinned module (config/crd/bases), which ./build copies next to
the binaries.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import yaml

from certs import KeyPair, make_loopback_serving

GROUP = "leaderworkerset.x-k8s.io"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"  # on every pod the controller creates
CRD_NAMES = ("leaderworkersets.leaderworkerset.x-k8s.io",
             "disaggregatedsets.disaggregatedset.x-k8s.io")
CONFIG_NAME = "modeldeploy-e2e-lws"


def crd_dir(bin_dir: Path) -> Path:
    """Where ./build puts the pinned module's CRDs: beside the bin folder."""
    return bin_dir.parent / "lws-crds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, ca: KeyPair, webhook_port: int, health_port: int) -> Path:
    """The controller's Configuration file and its webhook certificate (tls.crt / tls.key in
    the cert folder, the names controller-runtime's webhook server reads)."""
    cert_dir = directory / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    pair = make_loopback_serving(ca, directory / "pki", "lws-webhook")
    (cert_dir / "tls.crt").write_bytes(pair.cert.read_bytes())
    (cert_dir / "tls.key").write_bytes(pair.key.read_bytes())
    (cert_dir / "tls.key").chmod(0o600)
    config = {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def argv(bin_dir: Path, kubeconfig: Path, config: Path) -> list[str]:
    return [str(bin_dir / "lws"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            "--zap-log-level=info"]


def _webhook(name: str, url: str, ca_bundle: str, group: str, resource: str,
             operations: list[str], pods: bool) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": operations,
                   "resources": [resource]}],
    }
    if pods:  # as LWS's own kustomize patches: only pods of a LeaderWorkerSet
        hook["objectSelector"] = {"matchExpressions": [{"key": LWS_NAME_LABEL,
                                                        "operator": "Exists"}]}
    return hook


def webhook_configurations(port: int, ca: KeyPair) -> list[dict[str, Any]]:
    """LWS's config/webhook/manifests.yaml with the pod patches applied, by URL."""
    base = f"https://127.0.0.1:{port}"
    bundle = base64.b64encode(ca.cert.read_bytes()).decode()
    write = ["CREATE", "UPDATE"]
    mutating = [
        _webhook("mleaderworkerset.kb.io", f"{base}/mutate-leaderworkerset-x-k8s-io-v1-"
                 "leaderworkerset", bundle, GROUP, "leaderworkersets", write, False),
        _webhook("mpod.kb.io", f"{base}/mutate--v1-pod", bundle, "", "pods", ["CREATE"], True),
    ]
    validating = [
        _webhook("vleaderworkerset.kb.io", f"{base}/validate-leaderworkerset-x-k8s-io-v1-"
                 "leaderworkerset", bundle, GROUP, "leaderworkersets", write, False),
        _webhook("vpod.kb.io", f"{base}/validate--v1-pod", bundle, "", "pods", write, True),
        _webhook("vdisaggregatedset.kb.io", f"{base}/validate-disaggregatedset-x-k8s-io-v1-"
                 "disaggregatedset", bundle, "disaggregatedset.x-k8s.io", "disaggregatedsets",
                 write, False),
    ]
    meta = {"name": CONFIG_NAME}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": meta, "webhooks": mutating},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingWebhookConfiguration", "metadata": meta, "webhooks": validating},
    ]


def probe_object(namespace: str) -> dict[str, Any]:
    """A minimal LeaderWorkerSet, created with dryRun=All to see the webhooks answer."""
    return {
        "apiVersion": f"{GROUP}/v1", "kind": "LeaderWorkerSet",
        "metadata": {"name": "webhook-probe", "namespace": namespace},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2, "workerTemplate": {
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}},
    }
