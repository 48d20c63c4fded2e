"""4-bit and 8-bit loading with bitsandbytes, on the CPU.

bitsandbytes (0.50, the pinned release) has CPU kernels, so both modes really load and generate
here: the loader is checked to have swapped the linear layers for bitsandbytes' ``Linear4bit`` /
``Linear8bitLt``, and the server is started with ``--quantization`` and answers.

With transformers 5 one CPU limitation needs a workaround in the 8-bit case: its DeepSeek-V2
attention feeds ``kv_b_proj`` a 4-D tensor; bitsandbytes' int8 matmul flattens only 3-D inputs,
and its CPU (default-backend) row-wise quantization assumes 2-D, so it fails with "The size of
tensor a must match the size of tensor b" (the CUDA kernel counts rows over all leading
dimensions and is not affected; transformers 4.57, the main image's, passes 3-D and is not
affected either). There the 8-bit server keeps ``kv_b_proj`` unquantized with the server's
``--bnb-skip-modules kv_b_proj`` flag; every other linear layer is int8.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_harness import SERVED_NAME, Server, start_server, stop_server

pytest.importorskip("torch", reason="loading a model needs torch")
bnb = pytest.importorskip("bitsandbytes")

RENDERED = ["--model", "/models/x", "--served-model-name", "deepseek-v2-chat", "--host",
            "0.0.0.0", "--port", "8000"]


def test_bitsandbytes_config_from_the_flags() -> None:
    import torch
    from transformers import BitsAndBytesConfig  # transformers 4.38 checks bitsandbytes here

    from modeldeploy_serve import config as cfgmod

    assert cfgmod.bnb_config_kwargs(cfgmod.parse_args(RENDERED), torch.bfloat16) is None

    four = cfgmod.bnb_config_kwargs(cfgmod.parse_args([*RENDERED, "--quantization", "4-bit"]),
                                    torch.bfloat16)
    assert four is not None
    q4 = BitsAndBytesConfig(**four)
    assert q4.load_in_4bit and not q4.load_in_8bit
    assert q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.bfloat16

    eight = cfgmod.bnb_config_kwargs(
        cfgmod.parse_args([*RENDERED, "--quantization", "8-bit", "--bnb-skip-modules",
                           "kv_b_proj"]), torch.float32)
    assert eight is not None
    q8 = BitsAndBytesConfig(**eight)
    assert q8.load_in_8bit and not q8.load_in_4bit
    assert q8.llm_int8_skip_modules == ["lm_head", "kv_b_proj"]


def _eight_bit_skip() -> str:
    from modeldeploy_serve.textmodel import transformers_version

    return "kv_b_proj" if transformers_version() >= (5, 0) else ""


def _linear_kinds(model: object) -> dict[str, str]:
    import torch

    return {name: type(m).__name__ for name, m in model.named_modules()  # type: ignore[attr-defined]
            if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize(("quant", "kind"), [("4-bit", "Linear4bit"), ("8-bit", "Linear8bitLt")])
def test_loader_quantizes_the_linear_layers(tiny_model_dir: Path, quant: str, kind: str) -> None:
    from modeldeploy_serve.config import parse_args, read_model_config
    from modeldeploy_serve.textmodel import load_text_backend

    argv = ["--model", str(tiny_model_dir), "--quantization", quant, "--dtype", "float32"]
    skip = _eight_bit_skip() if quant == "8-bit" else ""
    if skip:
        argv += ["--bnb-skip-modules", skip]
    cfg = parse_args(argv)
    backend = load_text_backend(cfg, read_model_config(cfg.model))
    kinds = _linear_kinds(backend.model)
    assert any(".self_attn." in n for n in kinds), kinds
    for name, k in kinds.items():
        if name == "lm_head" or (skip and name.endswith(skip)):
            assert k == "Linear", name  # the output head and skipped modules stay unquantized
        else:  # attention, dense MLP, shared experts, and (transformers 4.x) every expert
            assert k == kind, (name, k)
    routed = getattr(backend.model.model.layers[1].mlp, "experts", None)
    if routed is not None and not hasattr(routed, "gate_up_proj"):  # one nn.Linear per expert
        experts = [n for n in kinds if ".mlp.experts." in n]
        assert experts and all(kinds[n] == kind for n in experts)
    qc = backend.model.config.quantization_config
    assert (qc.load_in_4bit, qc.load_in_8bit) == (quant == "4-bit", quant == "8-bit")
    assert backend.model.get_memory_footprint() > 0


@pytest.fixture(scope="module", params=["4-bit", "8-bit"])
def quant_server(request: pytest.FixtureRequest, tiny_model_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    quant = request.param
    skip = _eight_bit_skip() if quant == "8-bit" else ""
    extra = ["--bnb-skip-modules", skip] if skip else []
    log_path = tmp_path_factory.mktemp("logs") / f"server-{quant}.log"
    srv = start_server(tiny_model_dir, log_path, "--quantization", quant, "--dtype", "float32",
                       *extra)
    yield srv
    stop_server(srv)


def test_quantized_server_serves_chat_stream_and_concurrency(quant_server: Server) -> None:
    client = quant_server.openai()
    resp = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
        temperature=0, extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 8
    assert isinstance(resp.choices[0].message.content, str)
    chunks = list(client.completions.create(model=SERVED_NAME, prompt="The quick", max_tokens=6,
                                            stream=True, temperature=0,
                                            extra_body={"ignore_eos": True}))
    assert chunks[-1].choices[0].finish_reason == "length"
    # a batch of 4 different prompts through the quantized layers
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: client.completions.create(
            model=SERVED_NAME, prompt=f"Prompt {i}", max_tokens=5, temperature=0,
            extra_body={"ignore_eos": True}).usage.completion_tokens, range(4)))
    assert outs == [5, 5, 5, 5]
    assert "quantization=" in quant_server.log()
    assert httpx.get(f"{quant_server.url}/health").status_code == 200
