"""The Transformers engine's OpenAI-compatible server (``python -m modeldeploy_serve``).

It serves one model from a local Hugging Face snapshot folder, offline, with ``transformers``:
bf16 (or another dtype) or 4-bit / 8-bit bitsandbytes quantization at load time, layers spread
over the visible GPUs with ``device_map="auto"``. DeepSeek-VL2 checkpoints are detected from
``config.json`` and served through DeepSeek's own ``deepseek_vl2`` package.

It is its own distribution (``modeldeploy-serve``) and imports nothing of the operator; the
operator only renders its command line. torch is imported only inside the functions that load
or run a model, so ``--help``, the argument parser, the request and message handling and the app
itself import without it.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
