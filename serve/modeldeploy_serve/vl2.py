"""DeepSeek-VL2 through DeepSeek's own ``deepseek_vl2`` package (the ``-vl2`` image only).

DeepSeek-VL2 is not in transformers; its checkpoints need DeepSeek's package
(``DeepseekVLV2Processor``, ``DeepseekVLV2ForCausalLM``), which pins transformers 4.38 and
torch 2.x of early 2024. The adapter here turns OpenAI chat messages into DeepSeek's conversation
format::

    [{"role": "<|User|>", "content": "<image>\\nDescribe this.", "images": [PIL.Image]},
     {"role": "<|Assistant|>", "content": ""}]

one ``<image>`` placeholder per image, in the order the parts came, and runs generation the way
DeepSeek's README does: ``processor(conversations=..., images=..., force_batchify=True,
system_prompt=...)`` -> ``model.prepare_inputs_embeds(...)`` -> ``model.language.generate(
inputs_embeds=..., attention_mask=...)``. Requests are generated one at a time (batch size 1).

The conversation building and image decoding are plain Python and tested without the package;
loading and generating are verified only in the image, with real weights.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

from .config import ConfigError, ServeConfig
from .engine import BatchControl, Sequence
from .errors import bad_request
from .messages import ImagePart, Turn, open_image
from .textmodel import (
    Prepared,
    dtype_kwarg,
    eos_ids_of,
    generation_config,
    make_stopping_criteria,
    resolve_dtype,
)

log = logging.getLogger("modeldeploy_serve")

USER_ROLE = "<|User|>"
ASSISTANT_ROLE = "<|Assistant|>"
IMAGE_TOKEN = "<image>"
VL2_ARCHITECTURE = "DeepseekVLV2ForCausalLM"


def to_conversation(turns: list[Turn]) -> tuple[list[dict[str, Any]], list[ImagePart], str]:
    """OpenAI turns -> (DeepSeek-VL2 conversation, its images in order, system prompt).

    The conversation's ``images`` lists hold the ``ImagePart``s of each user turn; the caller
    decodes them to PIL images for the processor. The system prompt is the conversation's
    first message (role ``system``): the processor tokenizes only the conversation
    (``format_messages_v2``); its ``system_prompt`` argument reaches the display string alone.
    Consecutive messages of one role are joined into one turn, as the template alternates
    ``<|User|>`` and ``<|Assistant|>``.
    """
    system: list[str] = []
    conversation: list[dict[str, Any]] = []
    images: list[ImagePart] = []
    for i, turn in enumerate(turns):
        if turn.role == "system":
            if conversation:
                raise bad_request("System messages must come before the conversation for "
                                  "DeepSeek-VL2.", param=f"messages.{i}")
            system.append(turn.text())
            continue
        pieces: list[str] = []
        turn_images: list[ImagePart] = []
        for part in turn.parts:
            if isinstance(part, ImagePart):
                pieces.append(IMAGE_TOKEN)
                turn_images.append(part)
            else:
                if IMAGE_TOKEN in part:
                    raise bad_request(f"Text may not contain the {IMAGE_TOKEN} placeholder; send "
                                      "images as image_url parts.", param=f"messages.{i}")
                pieces.append(part)
        content = "\n".join(p for p in pieces if p)
        role = USER_ROLE if turn.role == "user" else ASSISTANT_ROLE
        images.extend(turn_images)
        if conversation and conversation[-1]["role"] == role:
            last = conversation[-1]
            last["content"] = "\n".join(c for c in (last["content"], content) if c)
            if role == USER_ROLE:
                last["images"].extend(turn_images)
        elif role == USER_ROLE:
            conversation.append({"role": role, "content": content, "images": turn_images})
        else:
            conversation.append({"role": role, "content": content})
    if not conversation or conversation[-1]["role"] != USER_ROLE:
        raise bad_request("The last message must be a user message.", param="messages")
    conversation.append({"role": ASSISTANT_ROLE, "content": ""})
    system_prompt = "\n".join(s for s in system if s)
    if system_prompt:
        conversation.insert(0, {"role": "system", "content": system_prompt})
    return conversation, images, system_prompt


def _allow_attrdict_on_new_python() -> None:
    """deepseek_vl2 imports ``attrdict``, which still looks for ``collections.Mapping`` (gone in
    Python 3.10). DeepSeek's own fix is to alias the ABCs back; the same is done here."""
    import collections
    import collections.abc

    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


class VL2Backend:
    max_batch_size = 1
    accepts_images = True

    def __init__(self, model: Any, processor: Any, dtype: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.dtype = dtype
        self.eos_token_ids = eos_ids_of(model.language if hasattr(model, "language") else model,
                                        self.tokenizer)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        self.pad_id = int(eos) if eos is not None else min(self.eos_token_ids)
        bos = getattr(self.tokenizer, "bos_token_id", None)
        self.bos_id = int(bos) if bos is not None else None
        self._lock = threading.Lock()

    def prepare_chat(self, turns: list[Turn], model_name: str) -> Prepared:
        conversation, parts, system = to_conversation(turns)
        pil_images = [open_image(p.data, param="messages") for p in parts]
        for message in conversation:  # the processor reads images from its `images` argument
            if "images" in message:
                message["images"] = [pil_images[p.index] for p in message["images"]]
        with self._lock:
            inputs = self.processor(conversations=conversation, images=pil_images,
                                    force_batchify=True, system_prompt=system)
        return Prepared(payload=("chat", inputs), prompt_len=int(inputs.input_ids.shape[1]))

    def prepare_text(self, prompt: str | list[int]) -> Prepared:
        if isinstance(prompt, str):
            with self._lock:
                ids = [int(t) for t in self.tokenizer.encode(prompt, add_special_tokens=True)]
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise bad_request("The prompt is empty.", param="prompt")
        return Prepared(payload=("text", ids), prompt_len=len(ids))

    def generate(self, batch: list[Sequence], control: BatchControl) -> None:
        import torch

        (seq,) = batch
        kind, inputs = seq.payload
        gen = generation_config(batch, self.pad_id, self.eos_token_ids, self.bos_id)
        stopping = make_stopping_criteria(control)
        device = self.model.device
        if seq.sampling.seed is not None:
            torch.manual_seed(seq.sampling.seed)
        with torch.inference_mode():
            if kind == "chat":
                inputs = inputs.to(device, dtype=self.dtype)
                embeds = self.model.prepare_inputs_embeds(
                    input_ids=inputs.input_ids,
                    images=inputs.images,
                    images_seq_mask=inputs.images_seq_mask,
                    images_spatial_crop=inputs.images_spatial_crop,
                )
                out = self.model.language.generate(inputs_embeds=embeds,
                                                   attention_mask=inputs.attention_mask,
                                                   generation_config=gen,
                                                   stopping_criteria=stopping, use_cache=True)
                # from inputs_embeds alone, generate returns the new tokens only
                control.catch_up(out.tolist())
            else:
                ids = torch.tensor([inputs], dtype=torch.long, device=device)
                out = self.model.language.generate(input_ids=ids,
                                                   attention_mask=torch.ones_like(ids),
                                                   generation_config=gen,
                                                   stopping_criteria=stopping, use_cache=True)
                control.catch_up(out[:, ids.shape[1]:].tolist())


def load_vl2_backend(cfg: ServeConfig, model_config: dict[str, Any]) -> VL2Backend:
    if cfg.quantization != "none":
        raise ConfigError("DeepSeek-VL2 is served unquantized here (--quantization none); "
                          f"got {cfg.quantization}")
    # DeepSeek-OCR checkpoints share the model_type but not the architecture; VL2's own
    # config.json names no architectures at all.
    architectures = set(model_config.get("architectures") or [VL2_ARCHITECTURE])
    if architectures != {VL2_ARCHITECTURE} or "auto_map" in model_config:
        own_code = " and code of its own (auto_map)" if "auto_map" in model_config else ""
        raise ConfigError(
            f"{cfg.model} has model_type {model_config.get('model_type')!r} but architectures "
            f"{sorted(architectures)}{own_code}; this image serves DeepSeek-VL2 "
            f"({VL2_ARCHITECTURE}) only")
    _allow_attrdict_on_new_python()
    try:
        # imported by name: the package exists only in the -vl2 image
        vl2_models: Any = importlib.import_module("deepseek_vl2.models")
    except ImportError as exc:
        raise ConfigError(
            f"{cfg.model} is a DeepSeek-VL2 checkpoint (model_type "
            f"{model_config.get('model_type')!r}); it needs DeepSeek's deepseek_vl2 package, "
            f"which the -vl2 image carries ({exc})") from exc
    dtype, compute_dtype = resolve_dtype(cfg.dtype, model_config)
    if dtype == "auto":
        dtype = compute_dtype
    log.info("loading DeepSeek-VL2 %s (dtype=%s, device_map=%s)", cfg.model, dtype,
             cfg.device_map)
    processor = vl2_models.DeepseekVLV2Processor.from_pretrained(cfg.model, local_files_only=True)
    model = vl2_models.DeepseekVLV2ForCausalLM.from_pretrained(
        cfg.model, local_files_only=True, device_map=cfg.device_map, **dtype_kwarg(dtype))
    model.eval()
    return VL2Backend(model, processor, dtype)
