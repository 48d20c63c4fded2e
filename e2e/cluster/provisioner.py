"""A fake dynamic volume provisioner for the e2e cluster (run as its own process).

It does what an external provisioner does, minus the storage: for each PVC that the
PersistentVolume controller has handed to it (annotation volume.kubernetes.io/storage-provisioner),
it creates a hostPath PV of the claimed size, pre-bound with a claimRef, and lets the real PV
controller bind the two; it deletes the PVs it made once they are Released (reclaim policy Delete).

    python3 provisioner.py --server URL --ca CA --cert CERT --key KEY
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from kubeapi import ApiClient, ApiError, Credentials, JsonObject

PROVISIONER = "modeldeploy.dev/fake-provisioner"
STORAGE_CLASS = "standard"
PROVISIONER_ANNOTATIONS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
HOST_ROOT = "/var/lib/modeldeploy-fake-pv"


def storage_class_manifest() -> JsonObject:
    """The default StorageClass served by this provisioner."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def _is_ours(claim: JsonObject) -> bool:
    annotations = claim["metadata"].get("annotations") or {}
    return any(annotations.get(key) == PROVISIONER for key in PROVISIONER_ANNOTATIONS)


def _wants_volume(claim: JsonObject) -> bool:
    return (
        _is_ours(claim)
        and not claim["spec"].get("volumeName")
        and claim.get("status", {}).get("phase") == "Pending"
        and "deletionTimestamp" not in claim["metadata"]
    )


def volume_for(claim: JsonObject, reclaim_policy: str) -> JsonObject:
    meta, spec = claim["metadata"], claim["spec"]
    name = f"pvc-{meta['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "storageClassName": spec.get("storageClassName"),
            "persistentVolumeReclaimPolicy": reclaim_policy,
            "hostPath": {"path": f"{HOST_ROOT}/{name}", "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


class Provisioner:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def _reclaim_policies(self) -> dict[str, str]:
        classes = self.api.items("/apis/storage.k8s.io/v1/storageclasses")
        return {
            item["metadata"]["name"]: item.get("reclaimPolicy", "Delete")
            for item in classes
            if item.get("provisioner") == PROVISIONER
        }

    def provision(self) -> None:
        policies = self._reclaim_policies()
        existing = {pv["metadata"]["name"] for pv in self.api.items("/api/v1/persistentvolumes")}
        for claim in self.api.items("/api/v1/persistentvolumeclaims"):
            class_name = claim["spec"].get("storageClassName")
            if not _wants_volume(claim) or class_name not in policies:
                continue
            volume = volume_for(claim, policies[class_name])
            if volume["metadata"]["name"] not in existing:
                self._create(volume)

    def _create(self, volume: JsonObject) -> None:
        try:
            self.api.create("/api/v1/persistentvolumes", volume)
        except ApiError as error:
            if error.status != 409:
                raise
        print(f"provisioned {volume['metadata']['name']}", flush=True)

    def reclaim(self) -> None:
        for volume in self.api.items("/api/v1/persistentvolumes"):
            if _releasable(volume):
                name = volume["metadata"]["name"]
                self.api.delete(f"/api/v1/persistentvolumes/{name}")
                print(f"deleted released {name}", flush=True)


def _releasable(volume: JsonObject) -> bool:
    annotations = volume["metadata"].get("annotations") or {}
    return (
        annotations.get(PROVISIONED_BY) == PROVISIONER
        and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
        and volume.get("status", {}).get("phase") == "Released"
        and "deletionTimestamp" not in volume["metadata"]
    )


def run(api: ApiClient, interval: float) -> None:
    provisioner = Provisioner(api)
    while True:
        try:
            provisioner.provision()
            provisioner.reclaim()
        except (ApiError, OSError) as error:
            print(f"sync failed (will retry): {error}", file=sys.stderr, flush=True)
        time.sleep(interval)


def _parse(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = _parse(argv)
    api = ApiClient(Credentials(args.server, args.ca, args.cert, args.key))
    print(f"fake provisioner {PROVISIONER} watching {args.server}", flush=True)
    run(api, args.interval)


if __name__ == "__main__":
    main(sys.argv[1:])
