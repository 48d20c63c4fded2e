"""What the operator renders for one download: the Job container's command and the narrow
RBAC of the progress channel. Pure: plain dicts, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .contract import DOWNLOAD_EXCLUDES, HUBS, InvalidArgument, validate_model_id, validate_revision

# Exit statuses a retry cannot change (see cli.py): invalid arguments, the hub refused, not
# enough space. A failed verification (5) or an unreachable hub (6) is worth the Job's retries.
PERMANENT_EXIT_CODES = (2, 3, 4)

Obj = dict[str, Any]

CACHE_MOUNT = "/cache"


def loader_command(hub: str, model_id: str, revision: str, *, target: str = CACHE_MOUNT,
                   job_name: str | None = None,
                   excludes: Sequence[str] = DOWNLOAD_EXCLUDES) -> list[str]:
    """The download container's command. Every value is passed as `--name=value`, so that no
    value can ever be read as a flag of its own; the loader validates them again."""
    if hub not in HUBS:
        raise InvalidArgument(f"hub {hub!r} is not one of {', '.join(HUBS)}")
    command = ["python", "-m", "modeldeploy.loader", f"--hub={hub}",
               f"--model-id={validate_model_id(model_id)}",
               f"--revision={validate_revision(revision)}", f"--target={target}"]
    command += [f"--exclude={pattern}" for pattern in excludes]
    if job_name is not None:
        command.append(f"--job-name={job_name}")
    return command


def progress_account_name(job_name: str) -> str:
    """The ServiceAccount, Role and RoleBinding of one download share its Job's name."""
    return job_name


def download_rbac(job_name: str, namespace: str, *, labels: dict[str, str] | None = None,
                  owners: list[Obj] | None = None) -> list[Obj]:
    """ServiceAccount, Role and RoleBinding that let the download pod do exactly one thing:
    patch its own Job (the progress annotation). No get, no list, no other object.

    The ServiceAccount does not automount its token; the download pod opts in
    (`download_pod_settings`), so no other pod that names it gets the token by default."""
    name = progress_account_name(job_name)

    def meta() -> Obj:
        m: Obj = {"name": name, "namespace": namespace}
        if labels:
            m["labels"] = dict(labels)
        if owners:
            m["ownerReferences"] = [dict(o) for o in owners]
        return m

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(),
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [job_name],
                    "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def download_pod_settings(job_name: str) -> Obj:
    """Fields to merge into the download Job's pod spec: its own ServiceAccount, with the token
    mounted in this pod only."""
    return {"serviceAccountName": progress_account_name(job_name),
            "automountServiceAccountToken": True}


def download_container_settings() -> Obj:
    """Fields to merge into the download container: the loader's last line becomes the
    terminated container's message (it also writes /dev/termination-log itself)."""
    return {"terminationMessagePolicy": "FallbackToLogsOnError"}


def download_failure_policy(container: str = "download") -> Obj:
    """The Job's `podFailurePolicy`: fail at once on an exit status no retry can change, so the
    loader's own last line is the failure instead of `backoffLimit` identical tries. Needs
    `restartPolicy: Never` (the download Job has it)."""
    return {"rules": [
        {"action": "FailJob",
         "onExitCodes": {"containerName": container, "operator": "In",
                         "values": list(PERMANENT_EXIT_CODES)}},
        # a pod evicted or preempted (node drain) is not a failed try
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}
