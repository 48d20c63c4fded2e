"""Fixtures: a tiny random DeepSeek-V2 folder, and the real server started on 127.0.0.1.

The pure tests (test_serve_units, test_serve_startup) need no torch. The files that load a model
(test_serve_api, test_serve_loading, test_serve_quant) need it and skip as a whole only where it
is not installed; wherever it is, they run.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("modeldeploy_serve") is None:  # not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_harness import Server, start_server, stop_server


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeldeploy_serve.tiny import build_model_folder

    path = tmp_path_factory.mktemp("models") / "deepseek-v2-tiny"
    build_model_folder(str(path), shape="tiny", seed=0)
    return path


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    srv = start_server(tiny_model_dir, log_path, "--dtype", "float32", "--max-model-len", "512",
                       "--max-batch-size", "8")
    yield srv
    stop_server(srv)
