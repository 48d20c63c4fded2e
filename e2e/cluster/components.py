"""Command lines of the control-plane components, all bound to 127.0.0.1.

The flags follow what kubeadm and kwokctl pass, minus what needs a real node (kubelet client,
cloud provider). Pure functions: paths and ports in, argv out.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from certs import Pki

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_LEASE_SECONDS = 40
FRONT_PROXY_CLIENT = "front-proxy-client"  # the name of the client pair and of its CN


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def free(cls) -> Ports:
        """Ports the kernel reports free now (another cluster may be running beside this one)."""
        sockets = [socket.socket() for _ in range(5)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            ports = [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        return cls(*ports)


@dataclass(frozen=True)
class Kubeconfigs:
    admin: Path
    controller_manager: Path
    scheduler: Path
    kwok: Path


def etcd(bin_dir: Path, data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        "--name=e2e",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=e2e={peer}",
        "--unsafe-no-fsync",  # a throwaway store: durability costs time on CI disks
        "--log-level=warn",
    ]


def kube_apiserver(bin_dir: Path, pki: Pki, ports: Ports, cert_dir: Path) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={cert_dir}",
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",  # a loopback address is not a valid Endpoints IP
        # the aggregation layer (front proxy), as kubeadm sets it up
        f"--requestheader-client-ca-file={pki.ca.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.clients[FRONT_PROXY_CLIENT].cert}",
        f"--proxy-client-key-file={pki.clients[FRONT_PROXY_CLIENT].key}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",  # on top of the default set
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def _serving_flags(port: int, cert_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def kube_controller_manager(
    bin_dir: Path, pki: Pki, ports: Ports, cert_dir: Path, kubeconfig: Path
) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        *_serving_flags(ports.controller_manager, cert_dir, kubeconfig),
        "--controllers=*",
        "--use-service-account-credentials=true",  # each controller acts with its own RBAC
        # the defaults (20/30) would make a benchmark of ~1000 pods wait on the ReplicaSet
        # controller's client for 50 s; the API server has room for more
        "--kube-api-qps=100",
        "--kube-api-burst=200",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ]


def kube_scheduler(bin_dir: Path, ports: Ports, cert_dir: Path, kubeconfig: Path) -> list[str]:
    return [str(bin_dir / "kube-scheduler"), *_serving_flags(ports.scheduler, cert_dir, kubeconfig)]


def kwok(bin_dir: Path, kubeconfig: Path, config: Path) -> list[str]:
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-label-selector=type=kwok",
        f"--cidr={POD_CIDR}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
    ]
