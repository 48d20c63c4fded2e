"""Start-up paths: bad folders fail fast, DeepSeek-VL2 folders are routed to the VL2 path."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve_harness import free_port, server_env, start_server, stop_server

pytest.importorskip("torch", reason="loading a model needs torch")


def run_to_exit(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modeldeploy_serve", *args], env=server_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_help_needs_no_torch() -> None:
    r = subprocess.run([sys.executable, "-c",
                        "import sys, modeldeploy_serve.config as c; c.build_parser().format_help();"
                        "sys.exit(any(m in sys.modules for m in ('torch', 'transformers')))"],
                       env=server_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_missing_model_folder_exits_2(tmp_path: Path) -> None:
    r = run_to_exit(["--model", str(tmp_path / "nothing"), "--port", str(free_port())])
    assert r.returncode == 2
    assert "is not a folder" in r.stderr


def test_folder_without_config_exits_2(tmp_path: Path) -> None:
    r = run_to_exit(["--model", str(tmp_path), "--port", str(free_port())])
    assert r.returncode == 2
    assert "config.json is missing" in r.stderr


def test_broken_weights_are_unhealthy_then_exit(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A folder whose weights cannot load: /health is 503 (never 200) and the process exits 1."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    srv = start_server(broken, tmp_path / "log.txt", "--dtype", "float32", wait_healthy=False)
    codes: list[int] = []
    deadline = time.monotonic() + 120
    while srv.proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            codes.append(httpx.get(f"{srv.url}/health", timeout=5).status_code)
        time.sleep(0.1)
    assert srv.proc.wait(timeout=30) == 1
    assert 200 not in codes
    assert "loading the model failed" in srv.log()


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


def test_full_queue_answers_503_and_the_rest_are_served(tmp_path: Path,
                                                       tiny_model_dir: Path) -> None:
    """With room for 2 waiting sequences, a burst of 8 gets some 503s (OpenAI-shaped), every
    other request completes, and the server stays healthy."""
    from concurrent.futures import ThreadPoolExecutor

    srv = start_server(tiny_model_dir, tmp_path / "log.txt", "--dtype", "float32",
                       "--max-queue-size", "2", "--max-batch-size", "1")
    try:
        def ask(i: int) -> httpx.Response:
            return httpx.post(f"{srv.url}/v1/completions", timeout=120, json={
                "model": "deepseek-v2-tiny", "prompt": f"burst {i}", "max_tokens": 64,
                "temperature": 0, "ignore_eos": True})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(ask, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {200, 503}, codes
        assert 503 in codes and 200 in codes, codes
        for r in responses:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "queue_full"
            else:
                assert r.json()["usage"]["completion_tokens"] == 64
        assert httpx.get(f"{srv.url}/health").status_code == 200
    finally:
        stop_server(srv)


def test_native_class_is_preferred_over_the_folders_remote_code(tmp_path: Path,
                                                                tiny_model_dir: Path) -> None:
    """Real DeepSeek-V2 snapshots carry their own modeling code (config.json auto_map), and the
    catalog sets --trust-remote-code. transformers implements deepseek_v2 itself, so the server
    uses that; here the auto_map names files that do not exist, so loading them would fail."""
    folder = tmp_path / "with-auto-map"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                          "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    srv = start_server(folder, tmp_path / "log.txt", "--dtype", "float32", "--trust-remote-code")
    try:
        r = httpx.post(f"{srv.url}/v1/completions", timeout=60, json={
            "model": "deepseek-v2-tiny", "prompt": "Hello", "max_tokens": 3, "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 3
        assert "natively" in srv.log()
    finally:
        stop_server(srv)
