"""Start-up paths that load no model (no torch needed): the pure modules import without torch,
bad folders fail fast, DeepSeek-VL2 folders are routed to the VL2 path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serve_harness import free_port, server_env, start_server


def run_to_exit(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy_serve", *args], env=server_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_help_needs_no_torch() -> None:
    r = subprocess.run([sys.executable, "-c",
                        "import sys, modeldeploy_serve.config as c; c.build_parser().format_help();"
                        "sys.exit(any(m in sys.modules for m in ('torch', 'transformers')))"],
                       env=server_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_server_and_its_parts_import_without_torch() -> None:
    """Every module of the server imports without torch (it is imported only inside the
    functions that load or run a model), so the argument parser can be imported by the
    operator's tests and the start-up checks run before anything heavy is loaded."""
    code = ("import sys, importlib, pkgutil, modeldeploy_serve as pkg\n"
            "names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]\n"
            "assert {'config', 'server', 'textmodel', 'vl2', '__main__'} <= set(names), names\n"
            "for m in names: importlib.import_module('modeldeploy_serve.' + m)\n"
            "heavy = sorted(m for m in sys.modules\n"
            "               if m.split('.')[0] in ('torch', 'accelerate', 'bitsandbytes'))\n"
            "sys.exit(f'imported {heavy[:5]}' if heavy else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], env=server_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout


def test_missing_model_folder_exits_2(tmp_path: Path) -> None:
    r = run_to_exit(["--model", str(tmp_path / "nothing"), "--port", str(free_port())])
    assert r.returncode == 2
    assert "is not a folder" in r.stderr


def test_folder_without_config_exits_2(tmp_path: Path) -> None:
    r = run_to_exit(["--model", str(tmp_path), "--port", str(free_port())])
    assert r.returncode == 2
    assert "config.json is missing" in r.stderr


def test_vl2_folder_takes_the_vl2_path(tmp_path: Path) -> None:
    """A DeepSeek-VL2 config.json is detected; without DeepSeek's package (it is only in the
    -vl2 image) the server says so and exits 3."""
    folder = tmp_path / "deepseek-vl2-tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "deepseek_vl_v2", "architectures": ["DeepseekVLV2ForCausalLM"],
        "language_config": {"model_type": "deepseek_v2", "max_position_embeddings": 4096}}))
    srv = start_server(folder, tmp_path / "log.txt", "--trust-remote-code", wait_healthy=False)
    code = srv.proc.wait(timeout=120)
    log = srv.log()
    try:
        import deepseek_vl2  # noqa: F401
    except ImportError:
        assert code == 3, log
        assert "DeepSeek-VL2 checkpoint" in log and "deepseek_vl2" in log
    else:  # in the -vl2 image the package is there; this folder has no weights, so loading fails
        assert code == 1, log


def test_other_architectures_of_the_vl2_model_type_are_refused(tmp_path: Path) -> None:
    """DeepSeek-OCR checkpoints say model_type deepseek_vl_v2 too; they are refused by name
    (exit 3) before anything is loaded, not handed to DeepSeek-VL2's classes."""
    folder = tmp_path / "deepseek-ocr"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "deepseek_vl_v2", "architectures": ["DeepseekOCRForCausalLM"],
        "auto_map": {"AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM"},
        "language_config": {"max_position_embeddings": 8192}}))
    srv = start_server(folder, tmp_path / "log.txt", wait_healthy=False)
    assert srv.proc.wait(timeout=120) == 3, srv.log()
    assert "architectures ['DeepseekOCRForCausalLM'] and code of its own (auto_map)" in srv.log()
    assert "serves DeepSeek-VL2 (DeepseekVLV2ForCausalLM) only" in srv.log()


