"""`modeldeploy` as a user runs it: the console script in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import EXAMPLES, ROOT


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy.cli", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_render(example: Path) -> None:
    result = run("render", "-f", str(example))
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Job",
                     "Deployment", "Service"]


def test_examples_cover_every_seed_spec() -> None:
    seen = set()
    for path in EXAMPLES.glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())["spec"]
        seen.add((spec["model"], spec["sizeInBillions"], spec.get("quantization", "none")))
    assert seen >= {("deepseek-v2-chat", 16, "none"), ("deepseek-v2-chat", 236, "none"),
                    ("deepseek-v2-chat", 16, "4-bit"), ("deepseek-vl2", 3, "none"),
                    ("deepseek-vl2", 16, "none"), ("deepseek-vl2", 27, "none")}


MD = """apiVersion: modeldeploy.dev/v1alpha1
kind: ModelDeployment
metadata: {name: x, namespace: team-a}
spec: {model: %s, sizeInBillions: %s%s}
"""


def test_render_from_stdin_keeps_namespace() -> None:
    result = run("render", "-f", "-", stdin=MD % ("deepseek-v2-chat", 16, ""))
    assert result.returncode == 0, result.stderr
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(result.stdout)} == {"team-a"}


def test_cache_complete_renders_no_job() -> None:
    result = run("render", "--cache-complete", "-f", "-",
                 stdin=MD % ("deepseek-v2-chat", 16, ""))
    assert "Job" not in [d["kind"] for d in yaml.safe_load_all(result.stdout)]


@pytest.mark.parametrize(("doc", "code", "message"), [
    (MD % ("deepseek-v2", 16, ""), 1, "model 'deepseek-v2' is not in the catalog; did you "
                                      "mean: deepseek-v2-chat, "),
    (MD % ("deepseek-v2-chat", 17, ""), 1, "available: pytorch 16B, pytorch 236B"),
    (MD % ("deepseek-v2-chat", 16, ", quantization: 4-bit, engine: sglang"), 1,
     "engines that can: transformers"),
    (MD % ("deepseek-v2-chat", 16, ", gpus: 2"), 2, "spec.gpus: Extra inputs are not permitted"),
    (MD % ("deepseek-v2-chat", -1, ""), 2,
     "spec.sizeInBillions: Input should be greater than 0"),
    (MD.replace("name: x,", "name: Llama_3,") % ("deepseek-v2-chat", 16, ""), 2,
     "'Llama_3': metadata.name must be a DNS-1035 label"),
    (MD.replace("name: x,", f"name: {'m' * 64},") % ("deepseek-v2-chat", 16, ""), 2,
     "at most 63 characters"),
    (MD.replace("name: x,", 'name: "x\\n",') % ("deepseek-v2-chat", 16, ""), 2,
     "'x\\n': metadata.name must be a DNS-1035 label"),
    (MD.replace("team-a", "Team_A") % ("deepseek-v2-chat", 16, ""), 2,
     "namespace 'Team_A' is not a DNS-1123 label"),
    ("kind: Deployment\n", 2, "expected kind ModelDeployment"),
    ("spec: [unclosed\n", 2, "is not valid YAML"),
    ("", 2, "holds no object"),
])
def test_errors_are_one_clear_sentence(doc: str, code: int, message: str) -> None:
    result = run("render", "-f", "-", stdin=doc)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_output_is_plain_yaml_without_anchors() -> None:
    """Repeated label maps are written out: no &id001 / *id001 for a human to decode."""
    result = run("render", "-f", str(EXAMPLES / "deepseek-v2-lite.yaml"))
    assert result.returncode == 0, result.stderr
    assert "&id" not in result.stdout and "*id" not in result.stdout


def test_missing_file() -> None:
    result = run("render", "-f", "no-such.yaml")
    assert result.returncode == 2 and "cannot read no-such.yaml" in result.stderr


def test_crd_command_prints_the_committed_crd() -> None:
    result = run("crd")
    assert result.stdout == (ROOT / "crds/modeldeploy.dev_modeldeployments.yaml").read_text()


def test_catalog_list_and_show() -> None:
    listing = run("catalog", "list").stdout
    assert listing.splitlines()[0].split()[:2] == ["MODEL", "ABILITIES"]
    assert any(line.startswith("deepseek-vl2 ") for line in listing.splitlines())
    shown = run("catalog", "show", "deepseek-v2-chat").stdout
    assert "4-bit: transformers" in shown and "none: vllm, sglang, transformers" in shown
    assert "deepseek-ai/DeepSeek-V2-Lite-Chat@85864749" in shown
    missing = run("catalog", "show", "deepseek")
    assert missing.returncode == 2 and "not in the catalog" in missing.stderr


def test_catalog_with_xinference_file() -> None:
    fixture = ROOT / "tests/fixtures/xinference-model-src.json"
    shown = run("catalog", "--catalog", str(fixture), "show", "tiny-chat")
    assert shown.returncode == 0 and "pytorch 1.8B (heads 16)" in shown.stdout
