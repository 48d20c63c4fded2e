"""Fixtures of the contract tests: the pinned engines installed, their parsers asked.

The engines live in their own venvs (scripts/setup-engines.sh, a no-op once installed); a
probe (probes/*_parser.py) runs inside the engine's venv and answers in JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pins import Pin, pins  # noqa: E402
from seeds import ROOT, Seed, seeds  # noqa: E402

PROBES = HERE / "probes"
SETUP = ROOT / "scripts" / "setup-engines.sh"


@pytest.fixture(scope="session")
def engines() -> dict[str, Pin]:
    """The engines at the versions of the default images, installed if missing."""
    result = subprocess.run([str(SETUP)], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=3600)
    assert result.returncode == 0, f"{SETUP} failed:\n{result.stderr[-4000:]}"
    found = pins()
    for pin in found.values():
        assert pin.python.is_file(), f"{pin.venv} has no python after {SETUP}"
    return found


def probe(engine: str, engines: dict[str, Pin], argvs: list[list[str]], dests: list[str],
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse each argv with the engine's own parser: in its venv (the Transformers server's:
    with the project's Python, as its image runs it)."""
    request = json.dumps({"argvs": argvs, "dests": dests})
    python = sys.executable if engine == "transformers" else str(engines[engine].python)
    extra = {"PYTHONPATH": str(ROOT / "operator")} if engine == "transformers" else {}
    result = subprocess.run(
        [python, str(PROBES / f"{engine}_parser.py")], input=request,
        capture_output=True, text=True, check=False, timeout=1800,
        env={**os.environ, "PYTHONWARNINGS": "default", **extra, **(env or {})})
    assert result.returncode == 0, f"{engine} probe failed:\n{result.stderr[-4000:]}"
    answer: dict[str, Any] = json.loads(result.stdout)
    assert len(answer["results"]) == len(argvs)
    return answer


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Seed, ...]:
    return seeds(tmp_path_factory.mktemp("seeds"))
