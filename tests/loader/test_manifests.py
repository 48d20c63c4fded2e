"""What the operator renders from the loader's package: the command and the RBAC."""

from __future__ import annotations

import pytest

from modeldeploy.loader import (
    DOWNLOAD_EXCLUDES,
    InvalidArgument,
    download_container_settings,
    download_failure_policy,
    download_pod_settings,
    download_rbac,
    loader_command,
)
from modeldeploy.loader.cli import _parser


def test_command_passes_every_value_glued_to_its_flag() -> None:
    command = loader_command("huggingface", "deepseek-ai/DeepSeek-V2-Lite-Chat", "main",
                             job_name="w-abc-dl")
    assert command == [
        "python", "-m", "modeldeploy.loader", "--hub=huggingface",
        "--model-id=deepseek-ai/DeepSeek-V2-Lite-Chat", "--revision=main", "--target=/cache",
        "--exclude=original/*", "--exclude=consolidated*", "--exclude=*.gguf",
        "--job-name=w-abc-dl"]
    # the loader's own parser reads it back as the same values
    args = _parser().parse_args(command[3:])
    assert (args.hub, args.model_id, args.revision, args.exclude, args.job_name) == (
        "huggingface", "deepseek-ai/DeepSeek-V2-Lite-Chat", "main", list(DOWNLOAD_EXCLUDES),
        "w-abc-dl")


@pytest.mark.parametrize(("model_id", "revision", "says"), [
    ("org/x", "--help", "starts with '-'"),
    ("org/x", "-rf", "starts with '-'"),
    ("org/x", "a/../b", "contains '..'"),
    ("org/x", "a b", "is not a branch, tag or commit hash"),
    ("-org/x", "main", "starts with '-'"),
    ("org/../x", "main", "contains '..'"),
    ("org/x;rm", "main", "is not ORG/NAME"),
])
def test_command_refuses_flag_like_and_escaping_values(model_id: str, revision: str,
                                                       says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        loader_command("huggingface", model_id, revision)


def test_command_refuses_unknown_hub() -> None:
    with pytest.raises(InvalidArgument, match="hub 'gitlab' is not one of"):
        loader_command("gitlab", "org/x", "main")


def test_rbac_allows_one_verb_on_one_job() -> None:
    owner = {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment", "name": "a",
             "uid": "u-1"}
    account, role, binding = download_rbac("w-abc-dl", "llm", labels={"k": "v"}, owners=[owner])
    assert account == {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "w-abc-dl", "namespace": "llm", "labels": {"k": "v"},
                                    "ownerReferences": [owner]},
                       "automountServiceAccountToken": False}
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"],
                              "resourceNames": ["w-abc-dl"], "verbs": ["patch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "w-abc-dl"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "w-abc-dl",
                                    "namespace": "llm"}]
    assert download_pod_settings("w-abc-dl") == {"serviceAccountName": "w-abc-dl",
                                                 "automountServiceAccountToken": True}


def test_manifests_are_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for manifest in download_rbac("w-abc-dl", "llm"):
        kubernetes_validate.validate(manifest, "1.31", strict=True)
    container = {"name": "download", "image": "ghcr.io/modeldeploy/loader:0.1.0",
                 "command": loader_command("huggingface", "org/x", "main", job_name="w-abc-dl"),
                 **download_container_settings()}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "w-abc-dl", "namespace": "llm"},
           "spec": {"backoffLimit": 3, "podFailurePolicy": download_failure_policy(),
                    "template": {"spec": {"restartPolicy": "Never", "containers": [container],
                                          **download_pod_settings("w-abc-dl")}}}}
    kubernetes_validate.validate(job, "1.31", strict=True)


def test_failure_policy_fails_at_once_on_permanent_exit_codes() -> None:
    rules = download_failure_policy()["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {
        "containerName": "download", "operator": "In", "values": [2, 3, 4]}}


def test_loader_imports_nothing_of_the_operator() -> None:
    """The loader image installs the package without its dependencies: the loader, with both
    hub libraries loaded, must not reach any other module of modeldeploy."""
    import subprocess
    import sys

    pytest.importorskip("modelscope", reason="the loader extra (pip install '.[loader]')")
    code = ("import sys, modeldeploy.loader.cli as c\n"
            "c.HuggingFace('org/x', 'main', endpoint='http://127.0.0.1:9')\n"
            "c.ModelScope('org/x', 'main')\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('modeldeploy'))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    modules = result.stdout.splitlines()[-1].split()
    assert "modeldeploy.loader.hubs" in modules
    assert all(m == "modeldeploy" or m.startswith("modeldeploy.loader") for m in modules), modules
