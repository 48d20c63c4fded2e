"""The Transformers engine's OpenAI-compatible server (``python -m modeldeploy.serve``).

It serves one model from a local Hugging Face snapshot folder, offline, with ``transformers``:
bf16 (or another dtype) or 4-bit / 8-bit bitsandbytes quantization at load time, layers spread
over the visible GPUs with ``device_map="auto"``. DeepSeek-VL2 checkpoints are detected from
``config.json`` and served through DeepSeek's own ``deepseek_vl2`` package.

Nothing else in ``modeldeploy`` imports this package; torch and transformers are imported only
inside the functions that need them, so ``--help`` and the pure parts load without them.
"""

from __future__ import annotations

__all__: list[str] = []
