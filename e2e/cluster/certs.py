"""A throwaway PKI for the e2e control plane, made with the openssl command line.

One CA signs the API server's serving certificate and one client certificate per user; the
service-account tokens get their own key pair. All keys are ECDSA P-256 (fast to generate).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_IP = "10.96.0.1"  # the first address of the service range: the `kubernetes` Service
_DAYS = "3650"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientIdentity:
    """A user the API server knows by its certificate: CN is the name, O the groups."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    apiserver: KeyPair
    clients: dict[str, KeyPair]
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _subject(user: str, groups: tuple[str, ...] = ()) -> str:
    return "".join(f"/O={group}" for group in groups) + f"/CN={user}"


def _make_ca(directory: Path) -> KeyPair:
    pair = KeyPair(directory / "ca.crt", directory / "ca.key")
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-days", _DAYS, "-subj", "/CN=modeldeploy-e2e-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    return pair


def _make_leaf(
    ca: KeyPair, directory: Path, name: str, subject: str, extensions: list[str]
) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    addext = [arg for extension in extensions for arg in ("-addext", extension)]
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-CA", str(ca.cert), "-CAkey", str(ca.key), "-days", _DAYS, "-subj", subject,
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        *addext,
    )  # fmt: skip
    return pair


def _make_serving(ca: KeyPair, directory: Path) -> KeyPair:
    names = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        f"IP:{SERVICE_IP}",
    ]
    extensions = ["extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(names)]
    return _make_leaf(ca, directory, "apiserver", "/CN=kube-apiserver", extensions)


def _make_service_account_keys(directory: Path) -> tuple[Path, Path]:
    key, pub = directory / "sa.key", directory / "sa.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub


def make_pki(directory: Path, clients: list[ClientIdentity]) -> Pki:
    """Creates the CA, the serving pair, one client pair per identity and the SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory)
    client_pairs = {
        client.name: _make_leaf(
            ca,
            directory,
            client.name,
            _subject(client.user, client.groups),
            ["extendedKeyUsage=clientAuth"],
        )
        for client in clients
    }
    sa_key, sa_pub = _make_service_account_keys(directory)
    return Pki(ca, _make_serving(ca, directory), client_pairs, sa_key, sa_pub)


def make_loopback_serving(ca: KeyPair, directory: Path, name: str) -> KeyPair:
    """A serving pair for a server on 127.0.0.1 (a webhook the API server calls by URL)."""
    directory.mkdir(parents=True, exist_ok=True)
    extensions = ["extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    return _make_leaf(ca, directory, name, f"/CN={name}", extensions)
