"""Randomly initialised DeepSeek-V2 models, saved as Hugging Face folders, for tests and benches.

``build_model_folder(path)`` trains a small byte-level BPE tokenizer (the ``tokenizers`` library)
with DeepSeek's special tokens and its chat template, builds a ``DeepseekV2ForCausalLM`` from
transformers' own ``DeepseekV2Config``, and saves both. ``shape="tiny"`` is a two-layer model that
runs on a CPU in milliseconds per token, with every linear layer's sizes multiples of 64 so
bitsandbytes' 4-bit CPU kernels accept it; ``shape="deepseek-v2-lite"`` is DeepSeek-V2-Lite's
real configuration (15.7B parameters, bf16), for a GPU. With a transformers that lacks
DeepSeek-V2 (the VL2 image's 4.38), the tiny shape falls back to a Llama of the same sizes.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"

# DeepSeek-V2(-Lite)-Chat's chat template
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_CORPUS = [
    "User: Hello, who are you?\n\nAssistant: I am a helpful assistant.",
    "User: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes with enough GPUs.",
    "DeepSeek-V2 is a mixture-of-experts language model with multi-head latent attention.",
    "Models are served behind an OpenAI-compatible endpoint on port 8000.",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \"",
    "你好\uff0c世界。今天天气很好。我们一起学习。",
]

TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 64,
    "q_lora_rank": None,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 32,
    "v_head_dim": 16,
    "max_position_embeddings": 1024,
    "topk_method": "greedy",
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": False,
    "routed_scaling_factor": 1.0,
}

# deepseek-ai/DeepSeek-V2-Lite(-Chat) config.json (architecture fields)
DEEPSEEK_V2_LITE: dict[str, Any] = {
    "vocab_size": 102400,
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_experts_per_tok": 6,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "max_position_embeddings": 163840,
    "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "rms_norm_eps": 1e-6,
    "topk_method": "greedy",
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": False,
    "routed_scaling_factor": 1.0,
    "tie_word_embeddings": False,
}

# The tiny sizes with DeepSeek-V2's real attention dimensions (multi-head latent attention) and
# context: vLLM's CPU MLA kernel refuses other head dimensions ("Head dimension 96 is not
# supported by MLA"), and an engine refuses a --max-model-len past the model's positions.
TINY_MLA: dict[str, Any] = {**TINY, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                            "qk_rope_head_dim": 64, "v_head_dim": 128,
                            "max_position_embeddings": 163840}

SHAPES = {"tiny": TINY, "tiny-mla": TINY_MLA, "deepseek-v2-lite": DEEPSEEK_V2_LITE}


def train_tokenizer(vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer trained on a small built-in corpus, with DeepSeek's specials."""
    tf: Any = importlib.import_module("transformers")
    tk: Any = importlib.import_module("tokenizers")  # a transformers dependency
    decoders, models, pre_tokenizers, trainers = (tk.decoders, tk.models, tk.pre_tokenizers,
                                                  tk.trainers)
    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    return fast


TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
}


def has_deepseek_v2() -> bool:
    """transformers has DeepSeek-V2 natively (4.5x and later; not the VL2 image's 4.38)."""
    return hasattr(importlib.import_module("transformers"), "DeepseekV2ForCausalLM")


def build_model_folder(path: str, shape: str = "tiny", seed: int = 0, dtype: str = "float32",
                       device: str = "cpu", arch: str = "auto") -> str:
    """Save a randomly initialised model of ``shape`` and its tokenizer under ``path``.

    ``arch`` is ``deepseek_v2``, ``llama`` (the same tiny sizes; for transformers without
    DeepSeek-V2, such as the VL2 image's) or ``auto`` (DeepSeek-V2 when transformers has it).
    """
    import torch

    transformers: Any = importlib.import_module("transformers")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    if arch == "auto":
        arch = "deepseek_v2" if has_deepseek_v2() else "llama"
    if arch == "llama" and shape != "tiny":
        raise ValueError("only the tiny shape exists for the llama fallback")
    os.makedirs(path, exist_ok=True)
    tokenizer = train_tokenizer()
    if arch == "deepseek_v2":
        config_cls: Any = transformers.DeepseekV2Config
        model_cls: Any = transformers.DeepseekV2ForCausalLM
        fields = dict(SHAPES[shape])
    elif arch == "llama":
        config_cls, model_cls = transformers.LlamaConfig, transformers.LlamaForCausalLM
        fields = dict(TINY_LLAMA)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    fields.setdefault("vocab_size", len(tokenizer))
    config = config_cls(
        **fields,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    config.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model: Any = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
