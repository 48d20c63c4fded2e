"""The run-wide skip policy (conftest.py at the root): a skip fails the run, unless it is for a
missing GPU. Each case runs a real pytest in a folder of its own with that conftest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

POLICY = Path(__file__).resolve().parent.parent / "conftest.py"


def run_pytest(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shutil.copy(POLICY, tmp_path / "conftest.py")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


SKIPS = {
    "test_a.py": ("import pytest\n"
                  "def test_ok():\n    pass\n"
                  "def test_skipped():\n    pytest.skip('helm is not installed')\n"),
    "test_b.py": ("import pytest\n"
                  "pytest.importorskip('a_module_that_is_not_there')\n"
                  "def test_never_collected():\n    pass\n"),
    "test_c.py": ("import pytest\n"
                  "@pytest.mark.skipif(True, reason='no checkov here')\n"
                  "def test_scan():\n    pass\n"),
}
ALLOWED = {
    "test_d.py": ("import pytest\n"
                  "def test_ok():\n    pass\n"
                  "@pytest.mark.skipif(True, reason='needs a GPU: CUDA is not available')\n"
                  "def test_on_gpu():\n    pass\n"
                  "@pytest.mark.xfail(reason='known', strict=True)\n"
                  "def test_known():\n    assert False\n"),
}


def test_any_skip_fails_the_run_and_is_listed_with_its_reason(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, {**SKIPS, **ALLOWED})
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    refused = result.stdout.split("skipped, NOT allowed: the run fails", 1)[1]
    assert "test_a.py::test_skipped: helm is not installed" in refused  # pytest.skip
    assert "test_b.py: could not import 'a_module_that_is_not_there'" in refused  # at import
    assert "test_c.py::test_scan: no checkov here" in refused  # skipif
    assert "test_on_gpu" not in refused and "test_known" not in refused
    assert "make test" in refused  # and says how to get what is missing


def test_a_skip_for_a_missing_gpu_is_allowed_and_listed(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ALLOWED)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    allowed = result.stdout.split("skipped, allowed", 1)[1]
    assert "test_d.py::test_on_gpu: needs a GPU: CUDA is not available" in allowed
    assert "NOT allowed" not in result.stdout
