"""The images: each build context holds exactly what its Dockerfile copies, the Transformers
images hold no operator code, image users match the pods' security contexts, pins are pinned.
Read from the Dockerfiles and ignore files (building needs a Docker engine: `make images`)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from modeldeploy.cache.objects import LOADER_UID
from support import ROOT

CHART = ROOT / "charts" / "modeldeploy"


def _dockerignore_keeps(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent folder) decides."""
    keep = True
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) or
               (glob.startswith("**/") and fnmatch.fnmatchcase(prefix, glob[3:]))
               for prefix in prefixes):
            keep = negated
    return keep


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return [s.rstrip("/") for s in sources]


@pytest.mark.parametrize(("dockerfile", "context", "ignore_file"), [
    ("images/operator/Dockerfile", ".", ".dockerignore"),
    ("images/loader/Dockerfile", ".", ".dockerignore"),
    ("images/loader/Dockerfile", ".", "images/loader/Dockerfile.dockerignore"),
    ("images/transformers/Dockerfile", "serve", "serve/.dockerignore"),
    ("images/transformers/Dockerfile.vl2", "serve", "serve/.dockerignore"),
])
def test_image_build_contexts_hold_what_the_dockerfiles_copy(dockerfile: str, context: str,
                                                             ignore_file: str) -> None:
    ignore = ROOT / ignore_file
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = _copy_sources(ROOT / dockerfile)
    assert sources
    for source in sources:
        assert (ROOT / context / source).exists(), source
        assert _dockerignore_keeps(patterns, source), f"{ignore} leaves out {source}"
    assert not _dockerignore_keeps(patterns, ".git")
    assert not _dockerignore_keeps(patterns, "operator/modeldeploy/__pycache__")
    assert not _dockerignore_keeps(patterns, "modeldeploy_serve/__pycache__")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.vl2"])
def test_transformers_images_hold_the_server_and_no_operator_code(dockerfile: str) -> None:
    """The engine images are built from serve/ (the modeldeploy-serve distribution), which holds
    no operator code, and run the module the operator renders."""
    path = ROOT / "images" / "transformers" / dockerfile
    text = path.read_text()
    sources = _copy_sources(path)
    assert "modeldeploy_serve" in sources, sources
    assert not any(s.startswith(("operator", "..", "/")) for s in sources), sources
    assert not (ROOT / "serve" / "modeldeploy").exists()
    assert not (ROOT / "operator" / "modeldeploy" / "serve").exists()
    assert 'ENTRYPOINT ["python", "-m", "modeldeploy_serve"]' in text
    assert "USER 1000:1000" in text


def test_image_users_match_the_pods() -> None:
    """The images' users are the uids the chart and the rendered Jobs run as."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    operator = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    assert f"USER {uid}:{uid}" in operator
    loader = (ROOT / "images" / "loader" / "Dockerfile").read_text()
    assert f"USER {LOADER_UID}:{LOADER_UID}" in loader
    for text in (operator, loader):
        bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
        assert len(bases) == 1 and re.search(r":\d+\.\d+\.\d+-", bases[0]), bases


def test_loader_requirements_are_pinned() -> None:
    lines = [line for line in (ROOT / "images" / "loader" / "requirements.txt")
             .read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line) for line in lines), lines
    names = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert {"huggingface-hub", "modelscope"} <= names
