"""Command line of the server: the flags the operator renders, then tuning flags.

Rendered by the operator (fixed)::

    --model PATH --served-model-name NAME --host H --port P
    [--quantization none|4-bit|8-bit] [--trust-remote-code] [--max-model-len N]
    [--dtype bfloat16|float16|float32|auto]

Tuning flags (user-supplied extra args) are documented in ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

QUANTIZATIONS = ("none", "4-bit", "8-bit")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# model_type values of DeepSeek-VL2 checkpoints (the published config.json says "deepseek_vl_v2")
VL2_MODEL_TYPES = frozenset({"deepseek_vl_v2", "deepseek_vl2"})


class ConfigError(ValueError):
    """A command line or model folder the server cannot start with."""


@dataclass(frozen=True)
class ServeConfig:
    model: str
    served_model_names: tuple[str, ...]
    host: str = "0.0.0.0"
    port: int = 8000
    quantization: str = "none"
    trust_remote_code: bool = False
    max_model_len: int | None = None
    dtype: str = "auto"
    # tuning
    max_batch_size: int = 8
    max_queue_size: int = 256
    batch_wait_ms: float = 20.0
    default_max_tokens: int = 2048
    max_n: int = 8
    max_image_bytes: int = 20 * 1024 * 1024
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_double_quant: bool = True
    bnb_skip_modules: tuple[str, ...] = field(default_factory=tuple)
    device_map: str = "auto"
    log_level: str = "info"

    @property
    def primary_name(self) -> str:
        return self.served_model_names[0]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _quantization(text: str) -> str:
    # accept the catalog's spellings and the common aliases
    aliases = {"4bit": "4-bit", "int4": "4-bit", "8bit": "8-bit", "int8": "8-bit", "": "none"}
    value = aliases.get(text.strip().lower(), text.strip().lower())
    if value not in QUANTIZATIONS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(QUANTIZATIONS)}; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modeldeploy_serve",
        description="OpenAI-compatible server for one Hugging Face model folder (Transformers).",
    )
    g = p.add_argument_group("rendered by the operator")
    g.add_argument("--model", required=True,
                   help="local Hugging Face snapshot folder (config.json, weights, tokenizer)")
    g.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="name(s) clients use in the `model` field (default: the folder name)")
    g.add_argument("--host", default="0.0.0.0")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--quantization", type=_quantization, default="none",
                   help="none | 4-bit | 8-bit (bitsandbytes, at load time)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model folder's own Python code (only when the catalog says so)")
    g.add_argument("--max-model-len", type=_positive_int, default=None,
                   help="prompt + completion tokens per request (default: the model's "
                        "max_position_embeddings)")
    g.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="weights / compute dtype; auto = the checkpoint's dtype on GPU, "
                        "float32 on CPU")
    t = p.add_argument_group("tuning")
    t.add_argument("--max-batch-size", type=_positive_int, default=8,
                   help="requests generated together in one batch (default 8)")
    t.add_argument("--max-queue-size", type=_positive_int, default=256,
                   help="waiting requests before new ones get 503 (default 256)")
    t.add_argument("--batch-wait-ms", type=_non_negative_float, default=20.0,
                   help="how long the scheduler waits to fill a batch (default 20 ms; "
                        "0 = never wait)")
    t.add_argument("--default-max-tokens", type=_positive_int, default=2048,
                   help="completion tokens when a request sets no max_tokens (default 2048, "
                        "never past --max-model-len)")
    t.add_argument("--max-n", type=_positive_int, default=8,
                   help="largest `n` (choices per request) accepted (default 8)")
    t.add_argument("--max-image-bytes", type=_positive_int, default=20 * 1024 * 1024,
                   help="largest decoded image accepted in a chat message (default 20 MiB)")
    t.add_argument("--bnb-4bit-quant-type", choices=("nf4", "fp4"), default="nf4")
    t.add_argument("--no-bnb-4bit-double-quant", dest="bnb_4bit_double_quant",
                   action="store_false", help="turn off nested quantization of 4-bit scales")
    t.add_argument("--bnb-skip-modules", default="",
                   help="comma-separated module names kept unquantized, besides the output "
                        "head lm_head (bitsandbytes llm_int8_skip_modules)")
    t.add_argument("--device-map", default="auto",
                   help='accelerate device map: "auto" (default), "cpu", "cuda:0", ...')
    t.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    return p


def parse_args(argv: Sequence[str] | None = None) -> ServeConfig:
    ns = build_parser().parse_args(argv)
    names = tuple(ns.served_model_name or (os.path.basename(os.path.normpath(ns.model)),))
    skip = tuple(s.strip() for s in ns.bnb_skip_modules.split(",") if s.strip())
    return ServeConfig(
        model=ns.model,
        served_model_names=names,
        host=ns.host,
        port=ns.port,
        quantization=ns.quantization,
        trust_remote_code=ns.trust_remote_code,
        max_model_len=ns.max_model_len,
        dtype=ns.dtype,
        max_batch_size=ns.max_batch_size,
        max_queue_size=ns.max_queue_size,
        batch_wait_ms=ns.batch_wait_ms,
        default_max_tokens=ns.default_max_tokens,
        max_n=ns.max_n,
        max_image_bytes=ns.max_image_bytes,
        bnb_4bit_quant_type=ns.bnb_4bit_quant_type,
        bnb_4bit_double_quant=ns.bnb_4bit_double_quant,
        bnb_skip_modules=skip,
        device_map=ns.device_map,
        log_level=ns.log_level,
    )


def read_model_config(model_dir: str) -> dict[str, Any]:
    """config.json of the snapshot folder; a clear ConfigError when it is not one."""
    if not os.path.isdir(model_dir):
        raise ConfigError(f"--model {model_dir!r} is not a folder (the server loads local "
                          "snapshots only)")
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing: not a Hugging Face model folder") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def is_vl2(model_config: dict[str, Any]) -> bool:
    return str(model_config.get("model_type", "")) in VL2_MODEL_TYPES


def context_length(model_config: dict[str, Any]) -> int | None:
    """The model's own context length from config.json (VL2 keeps it in language_config)."""
    for cfg in (model_config, model_config.get("language_config") or {},
                model_config.get("text_config") or {}):
        if isinstance(cfg, dict):
            value = cfg.get("max_position_embeddings")
            if isinstance(value, int) and value > 0:
                return value
    return None


def bnb_config_kwargs(cfg: ServeConfig, compute_dtype: Any) -> dict[str, Any] | None:
    """Keyword arguments of ``transformers.BitsAndBytesConfig`` for the chosen quantization.

    None for ``--quantization none``. ``compute_dtype`` is the torch dtype 4-bit layers compute
    in (the model dtype).
    """
    if cfg.quantization == "none":
        return None
    kwargs: dict[str, Any]
    if cfg.quantization == "4-bit":
        kwargs = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": cfg.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": cfg.bnb_4bit_double_quant,
            "bnb_4bit_compute_dtype": compute_dtype,
        }
    elif cfg.quantization == "8-bit":
        kwargs = {"load_in_8bit": True}
    else:  # parse_args refuses anything else
        raise ConfigError(f"unknown quantization {cfg.quantization!r}")
    if cfg.bnb_skip_modules:
        # an explicit list replaces bitsandbytes' default, which keeps the output head unquantized
        skip = list(cfg.bnb_skip_modules)
        kwargs["llm_int8_skip_modules"] = skip if "lm_head" in skip else ["lm_head", *skip]
    return kwargs
