"""Start-up paths that load a model (torch needed): broken weights, a full queue, the native
class preferred over a folder's remote code."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest

from serve_harness import start_server, stop_server

pytest.importorskip("torch", reason="loading a model needs torch")


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
