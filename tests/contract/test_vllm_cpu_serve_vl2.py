"""vLLM really serving DeepSeek-VL2 on the CPU: an image and text in one chat request.

A tiny random ``DeepseekVLV2ForCausalLM`` (tiny_vl2.py: DeepSeek-VL2's config, processor and
special tokens, a two-layer MLA language model, the full-size vision tower vLLM builds) is laid
out as the download Job leaves a cache, and vLLM runs with the command line and environment of
the Deployment rendered for examples/deepseek-vl2-tiny.yaml, the catalog's ``--hf-overrides``
and ``--limit-mm-per-prompt`` included (vllm_serving.py: only the pod's mounts and network
mapped, CPU-only settings added).

The model folder is about 850 MB, so it is built once per fingerprint of what builds it (the
builder's source, the tokenizer trainer's, the library versions) into the user cache,
``${XDG_CACHE_HOME:-~/.cache}/modeldeploy/models/deepseek-vl2-tiny-random-<fingerprint>``,
and the claim's weights/ links to it.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pins import Pin, cache_dir
from seeds import ROOT, Seed
from vllm_serving import Served, client, serve

EXAMPLE = "examples/deepseek-vl2-tiny.yaml"
BUILDER = Path(__file__).resolve().parent / "tiny_vl2.py"
VL2_ARGS = ["--hf-overrides", '{"architectures": ["DeepseekVLV2ForCausalLM"]}']


def in_venv(pin: Pin, *args: str, timeout: int) -> str:
    result = subprocess.run([str(pin.python), str(BUILDER), *args], capture_output=True,
                            text=True, check=False, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "serve")})
    assert result.returncode == 0, f"{BUILDER.name} {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout.strip()


def cached_model(pin: Pin) -> Path:
    """The model folder in the user cache, built (about 30 s) when its fingerprint is new."""
    key = in_venv(pin, "--fingerprint", timeout=120)
    folder = cache_dir() / "models" / f"deepseek-vl2-tiny-random-{key}"
    if not (folder / ".complete").is_file():
        started = time.monotonic()
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        in_venv(pin, str(partial), timeout=900)
        (partial / ".complete").write_text("built by tests/contract/tiny_vl2.py\n",
                                           encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        print(f"\ntiny DeepSeek-VL2 built in {time.monotonic() - started:.0f} s: {folder}",
              file=sys.stderr)
    return folder


def linked(folder: Path) -> Callable[[Path], None]:
    def write(weights: Path) -> None:
        weights.symlink_to(folder, target_is_directory=True)
    return write


@pytest.fixture(scope="module")
def served(engines: dict[str, Pin], rendered: tuple[Seed, ...],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    pin = engines["vllm"]
    (seed,) = [s for s in rendered if s.id == EXAMPLE]
    command = seed.command
    at = command.index(VL2_ARGS[0])
    assert command[at:at + 2] == VL2_ARGS, command  # the catalog's override is rendered
    with serve(pin, seed, tmp_path_factory.mktemp("vllm-vl2-pod"),
               linked(cached_model(pin))) as running:
        yield running


def png(width: int, height: int) -> str:
    """A data URL of a small PNG drawn here (red and blue halves)."""
    from PIL import Image

    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (width // 2, 0, width, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_models_and_the_rendered_probes(served: Served) -> None:
    models = client(served).models.list()
    assert [m.id for m in models.data] == [served.name] == ["deepseek-vl2-tiny"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = served.seed.container[kind]["httpGet"]["path"]
        assert httpx.get(served.url + path, timeout=10).status_code == 200, (kind, path)


BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
QUESTION = "What is in this picture?"
# A 320 x 240 image fits one 384 px tile: the global view and that tile, 27 x 27 patches of 14
# px each, 14 x 14 features after the 2 x 2 downsampling, a newline feature after each row, and
# one view separator: 14 * 15 + 14 * 15 + 1.
IMAGE_TOKENS_320X240 = 421


def tokens(served: Served, body: dict[str, Any]) -> list[int]:
    response = httpx.post(f"{served.url}/tokenize", timeout=60,
                          json={"model": served.name, **body})
    assert response.status_code == 200, response.text
    found: list[int] = response.json()["tokens"]
    return found


def vl2_prompt(user: str) -> str:
    """What vLLM's DeepSeek-VL2 chat template (the published tokenizer has none) renders."""
    return f"{BOS}<|User|>: {user}\n\n<|Assistant|>: "


def test_the_chat_template_is_deepseek_vl2s(served: Served) -> None:
    rendered = tokens(served, {"messages": [{"role": "user", "content": QUESTION}],
                               "add_generation_prompt": True})
    assert rendered == tokens(served, {"prompt": vl2_prompt(QUESTION),
                                       "add_special_tokens": False})


def test_image_and_text_chat(served: Served) -> None:
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png(320, 240)}},
        {"type": "text", "text": QUESTION}]}]
    started = time.monotonic()
    reply = client(served).chat.completions.create(
        model=served.name, messages=messages,  # type: ignore[arg-type]
        max_tokens=8, temperature=0)
    elapsed = time.monotonic() - started
    print(f"\nimage + text chat answer (8 tokens) in {elapsed:.2f} s", file=sys.stderr)
    choice = reply.choices[0]
    assert reply.model == served.name
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    # The image reached the model: its one <image> placeholder became the tiles' features.
    text = tokens(served, {"prompt": vl2_prompt(f"<image>\n{QUESTION}"),
                           "add_special_tokens": False})
    assert reply.usage.prompt_tokens == len(text) - 1 + IMAGE_TOKENS_320X240


def test_more_images_than_the_rendered_limit_are_refused(served: Served) -> None:
    """--limit-mm-per-prompt '{"image": 2}' from the catalog is in force."""
    image = {"type": "image_url", "image_url": {"url": png(64, 64)}}
    response = httpx.post(f"{served.url}/v1/chat/completions", timeout=120, json={
        "model": served.name, "max_tokens": 1,
        "messages": [{"role": "user", "content": [image, image, image,
                                                   {"type": "text", "text": "Compare."}]}]})
    assert response.status_code == 400, response.text
    assert "image" in response.text and "2" in response.text
