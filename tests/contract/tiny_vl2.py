"""A tiny random DeepSeek-VL2 checkpoint, laid out as deepseek-ai's own, for vLLM on a CPU.

`python tiny_vl2.py FOLDER` (in the vLLM venv: it needs torch, transformers and timm; with
serve/ on PYTHONPATH for the tokenizer trainer) writes:

- config.json: ``model_type`` ``deepseek_vl_v2`` and no ``architectures``, as the published
  checkpoints (the catalog's ``--hf-overrides`` names the class); ``language_config`` a
  two-layer DeepSeek-V2 with DeepSeek's real MLA dimensions (vLLM's CPU MLA kernel refuses
  smaller heads), ``vision_config`` / ``projector_config`` / ``tile_tag`` /
  ``global_view_pos`` / ``candidate_resolutions`` as in deepseek-ai/deepseek-vl2;
- processor_config.json as the published one (``DeepseekVLV2Processor``, patch 14, downsample
  2, the 23 tilings of 384 px with at most nine tiles);
- a byte-level BPE tokenizer trained here, with DeepSeek-VL2's special tokens (``<image>``, the
  grounding tokens, ``<|User|>`` / ``<|Assistant|>``, the pad token) and no chat template: vLLM
  then uses its own DeepSeek-VL2 template, as for the published tokenizer, which has none;
- model.safetensors: ``vision.*`` the SigLIP-SO400M/14 tower vLLM builds (timm's
  ``vit_so400m_patch14_siglip_384``, about 428 M parameters: vLLM builds that size whatever the
  config says, so the folder is about 850 MB), ``projector.*``, ``image_newline``,
  ``view_seperator`` (sic, DeepSeek's name) and ``language.*``, all randomly initialised.

The folder depends only on this file, serve/modeldeploy_serve/tiny.py and the versions of
torch, transformers, tokenizers and timm; `fingerprint()` hashes those, so a cache of it is
rebuilt when one of them changes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

SERVE = Path(__file__).resolve().parents[2] / "serve"
TINY_SOURCE = SERVE / "modeldeploy_serve" / "tiny.py"
VERSIONED = ("torch", "transformers", "tokenizers", "timm", "safetensors")

# The vision tower vLLM's DeepseekVLV2ForCausalLM builds (timm.create_model, pretrained=False)
VISION_MODEL = "vit_so400m_patch14_siglip_384.webli"
VISION_WIDTH = 1152
PAD = "<\uff5c\u2581pad\u2581\uff5c>"
IMAGE_TOKEN = "<image>"
# The special tokens DeepSeek-VL2's tokenizer and processor add, in the processor's order
VL2_SPECIALS = [IMAGE_TOKEN, "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>",
                "<|User|>", "<|Assistant|>"]
# deepseek-ai/deepseek-vl2's processor_config.json: every tiling of 384 px tiles m x n with
# m * n <= 9, in the published order
CANDIDATE_RESOLUTIONS = [
    [384, 384], [384, 768], [768, 384], [384, 1152], [1152, 384], [384, 1536], [1536, 384],
    [768, 768], [384, 1920], [1920, 384], [384, 2304], [2304, 384], [768, 1152], [1152, 768],
    [384, 2688], [2688, 384], [384, 3072], [3072, 384], [768, 1536], [1536, 768], [384, 3456],
    [3456, 384], [1152, 1152]]
PROCESSOR_CONFIG: dict[str, Any] = {
    "add_special_token": False,
    "candidate_resolutions": CANDIDATE_RESOLUTIONS,
    "downsample_ratio": 2,
    "ignore_id": -100,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_token": IMAGE_TOKEN,
    "mask_prompt": False,
    "normalize": True,
    "pad_token": PAD,
    "patch_size": 14,
    "processor_class": "DeepseekVLV2Processor",
    "sft_format": "deepseek",
}


def fingerprint() -> str:
    """What the folder is built from: these sources and the libraries' versions."""
    digest = hashlib.sha256()
    for path in (Path(__file__).resolve(), TINY_SOURCE):
        digest.update(path.read_bytes())
    for name in VERSIONED:
        digest.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
    return digest.hexdigest()[:16]


def tokenizer() -> Any:
    sys.path.insert(0, str(SERVE))
    from modeldeploy_serve.tiny import train_tokenizer

    tok = train_tokenizer()
    tok.add_special_tokens({"pad_token": PAD, "additional_special_tokens": VL2_SPECIALS})
    tok.chat_template = None
    return tok


def language_model(path: Path, tok: Any, seed: int) -> dict[str, Any]:
    """A tiny DeepSeek-V2 saved by transformers (its checkpoint naming); its config's dict."""
    import torch
    import transformers

    sys.path.insert(0, str(SERVE))
    from modeldeploy_serve.tiny import TINY_MLA

    config = transformers.DeepseekV2Config(
        **TINY_MLA, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config.architectures = ["DeepseekV2ForCausalLM"]
    torch.manual_seed(seed)
    model = transformers.DeepseekV2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    saved: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8"))
    for key in ("transformers_version", "dtype", "torch_dtype"):
        saved.pop(key, None)
    return saved


def build(folder: Path, seed: int = 0) -> None:
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True)
    tok = tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        language_config = language_model(Path(tmp), tok, seed)
        tensors = {f"language.{k}": v for f in sorted(Path(tmp).glob("*.safetensors"))
                   for k, v in load_file(f).items()}
    hidden = language_config["hidden_size"]
    torch.manual_seed(seed + 1)
    vision = timm.create_model(VISION_MODEL, pretrained=False, num_classes=0,
                               dynamic_img_size=True, dynamic_img_pad=True)
    tensors |= {f"vision.{k}": v.to(torch.bfloat16).contiguous()
                for k, v in vision.state_dict().items()}
    # downsample_mlp_gelu, depth 2, mlp_ratio 1: Linear(1152 * 2 * 2 -> n) GELU Linear(n -> n)
    projector = torch.nn.Sequential(torch.nn.Linear(VISION_WIDTH * 4, hidden), torch.nn.GELU(),
                                    torch.nn.Linear(hidden, hidden))
    tensors |= {f"projector.layers.{k}": v.to(torch.bfloat16)
                for k, v in projector.state_dict().items()}
    std = 1 / hidden ** 0.5
    tensors["image_newline"] = (torch.randn(hidden) * std).to(torch.bfloat16)
    tensors["view_seperator"] = (torch.randn(hidden) * std).to(torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": CANDIDATE_RESOLUTIONS,
        "global_view_pos": "head",
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "language_config": language_config,
        "projector_config": {"model_type": "mlp_projector", "projector_type":
                             "downsample_mlp_gelu", "input_dim": VISION_WIDTH,
                             "n_embed": hidden, "depth": 2, "mlp_ratio": 1,
                             "downsample_ratio": 2},
        "vision_config": {"model_type": "vision", "model_name": "siglip_so400m_patch14_384",
                          "image_size": 384, "patch_size": 14, "width": VISION_WIDTH,
                          "layers": 27, "mlp_ratio": 3.7362},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG, indent=2) + "\n",
                                                  encoding="utf-8")
    tok.save_pretrained(folder)
    tok_config = folder / "tokenizer_config.json"
    saved = json.loads(tok_config.read_text(encoding="utf-8"))
    saved["tokenizer_class"] = "LlamaTokenizerFast"  # as the published tokenizer_config.json
    tok_config.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    generation = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    (folder / "generation_config.json").write_text(json.dumps(generation) + "\n",
                                                   encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fingerprint"]:
        print(fingerprint())
    else:
        build(Path(sys.argv[1]))
