"""`modeldeploy catalog list|show` with Xinference files, `--catalog` where users type it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from support import FIXTURES, ROOT

QUIRKS = str(FIXTURES / "xinference-quirks.json")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy.cli", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.mark.parametrize("argv", [
    ["catalog", "--catalog", QUIRKS, "list"],
    ["catalog", "list", "--catalog", QUIRKS],
    ["catalog", "--catalog", QUIRKS, "list", "--catalog",
     str(FIXTURES / "xinference-model-src.json")],
], ids=["before", "after", "both"])
def test_list_takes_catalog_before_and_after(argv: list[str]) -> None:
    result = run(*argv)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    # one line per family: sizes, formats, engines, where its specs came from
    assert rows["dup-chat"][2:] == ["8", "awq,fp8,gptq,pytorch", "vllm,sglang,transformers",
                                    "xinference-quirks.json"]
    assert rows["under-chat"][2:4] == ["0.6,1.7,30", "pytorch"]
    assert rows["deepseek-vl2"][-1] == "built-in+xinference-quirks.json"
    if "both" in argv[-1] or argv.count("--catalog") == 2:
        assert "tiny-chat" in rows


def test_list_summarises_what_was_skipped() -> None:
    out = run("catalog", "list", "--catalog", QUIRKS).stdout
    assert "the Xinference files given hold 6 families: 3 listed, 3 skipped" in out
    assert ("skipped 3 families of the files given: 1 cannot be read; 1 no engine here runs "
            "its architectures; 1 no spec an engine here serves (--all lists them)") in out
    assert ("left out of the families listed: format ggufv2: 2; format mlx: 2; shadowed by an "
            "earlier spec (first match wins): 2; hub openmind_hub: 1; shadowed by a spec of our "
            "own catalog files: 1") in out
    assert "odd-arch (" not in out


def test_broken_family_warning_names_it() -> None:
    err = run("catalog", "list", "--catalog", QUIRKS).stderr
    assert ("WARNING: Xinference catalog xinference-quirks.json: family broken-chat skipped: "
            "cannot be read: context_length: Input should be a valid integer") in err


def test_list_all_names_every_skipped_family() -> None:
    out = run("catalog", "list", "--all", "--catalog", QUIRKS).stdout
    assert ("  odd-arch (xinference-quirks.json): no engine here runs its architectures "
            "(TelechatForCausalLM)") in out
    assert "  gguf-only (xinference-quirks.json): no spec an engine here serves" in out
    assert "  broken-chat (xinference-quirks.json): cannot be read: context_length" in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_show_says_where_each_spec_came_from(where: str) -> None:
    argv = ["catalog", "--catalog", QUIRKS, "show", "deepseek-vl2"] if where == "before" else \
        ["catalog", "show", "deepseek-vl2", "--catalog", QUIRKS]
    result = run(*argv)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "from: built-in deepseek.yaml" in out
    assert "  - pytorch 3B (heads 10)  [built-in deepseek.yaml]" in out
    assert "  - gptq 3B  [xinference-quirks.json]" in out
    assert "none: vllm (>= 0.7.0), sglang (>= 0.4.4.post2), transformers" in out
    assert "someone/deepseek-vl2-tiny-copy" not in out  # the built-in 3B pytorch spec wins


def test_show_of_a_skipped_family_says_why() -> None:
    result = run("catalog", "show", "odd-arch", "--catalog", QUIRKS)
    assert result.returncode == 2
    assert "model 'odd-arch' of xinference-quirks.json is not offered: no engine here runs " \
           "its architectures (TelechatForCausalLM)" in result.stderr


def test_render_of_an_imported_spec() -> None:
    md = ("apiVersion: modeldeploy.dev/v1alpha1\nkind: ModelDeployment\n"
          "metadata: {name: under}\nspec: {model: under-chat, sizeInBillions: 1.7}\n")
    result = run("render", "-f", "-", "--catalog", QUIRKS, stdin=md)
    assert result.returncode == 0, result.stderr
    (deployment,) = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["vllm", "serve"]
    (job,) = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Job"]
    assert "example-org/under-chat-1.7b" in str(job["spec"]["template"]["spec"])
