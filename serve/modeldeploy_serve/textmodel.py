"""Loading a causal LM from a local folder (bf16 / 4-bit / 8-bit) and generating with it.

Works with the transformers of the main image (4.57), with 5.x, and with the DeepSeek-VL2
image's 4.38: the few calls that differ are the helpers under "version differences".
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from .config import ServeConfig, bnb_config_kwargs
from .engine import BatchControl, Sequence
from .errors import bad_request
from .messages import Turn, text_messages

log = logging.getLogger("modeldeploy_serve")


# -- version differences -----------------------------------------------------------------------
def _transformers() -> Any:
    """The transformers module, untyped: its annotations differ from release to release."""
    return importlib.import_module("transformers")


def transformers_version() -> tuple[int, int]:
    parts = str(_transformers().__version__).split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``dtype=`` since transformers 4.56, ``torch_dtype=`` before."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}


def per_row_stopping() -> bool:
    """Whether stopping criteria may return one flag per row (transformers >= 4.39)."""
    return transformers_version() >= (4, 39)


def resolve_dtype(name: str, model_config: dict[str, Any]) -> tuple[Any, Any]:
    """(dtype for from_pretrained, concrete compute dtype) for ``--dtype``.

    ``auto`` is the checkpoint's dtype on GPU and float32 on CPU (bf16 matmuls are slow on most
    CPUs).
    """
    import torch

    if name != "auto":
        d = getattr(torch, name)
        return d, d
    if not torch.cuda.is_available():
        return torch.float32, torch.float32
    declared = model_config.get("torch_dtype") or model_config.get("dtype") or "bfloat16"
    concrete = getattr(torch, str(declared), torch.bfloat16)
    return "auto", concrete


def make_stopping_criteria(control: BatchControl) -> Any:
    """A transformers StoppingCriteria that feeds each row's newest token to ``control``."""
    import torch

    tf = _transformers()
    per_row = per_row_stopping()

    def check(self: Any, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        done = control.on_step([int(t) for t in input_ids[:, -1].tolist()])
        if per_row:
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        return all(done)

    # a StoppingCriteria subclass, made at run time (the base class comes from transformers)
    row_stop: Any = type("RowStop", (tf.StoppingCriteria,), {"__call__": check})
    return tf.StoppingCriteriaList([row_stop()])


def generation_config(batch: list[Sequence], pad_id: int, eos_ids: frozenset[int],
                      bos_id: int | None) -> Any:
    s = batch[0].sampling
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(seq.max_new_tokens for seq in batch),
        "do_sample": s.do_sample,
        "pad_token_id": pad_id,
        "eos_token_id": sorted(eos_ids),
        "repetition_penalty": s.repetition_penalty,
        "num_beams": 1,
    }
    if bos_id is not None:
        kwargs["bos_token_id"] = bos_id
    if s.ignore_eos:  # the end-of-sequence logit is masked until max_new_tokens
        kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
    if s.do_sample:
        kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    else:  # neutral values, so the model's own sampling defaults raise no warnings
        kwargs.update(temperature=1.0, top_p=1.0, top_k=0)
    return _transformers().GenerationConfig(**kwargs)


def eos_ids_of(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)


# -- the text backend --------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    payload: Any
    prompt_len: int


class TextBackend:
    """A causal LM and its tokenizer; ``generate`` runs left-padded batches."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_ids_of(model, tokenizer)
        if not self.eos_token_ids:
            raise RuntimeError("the model has no end-of-sequence token (generation_config or "
                               "tokenizer)")
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else min(self.eos_token_ids)
        bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_id = int(bos) if bos is not None else None
        self.max_batch_size = max_batch_size if per_row_stopping() else 1
        self._tok_lock = threading.Lock()  # prepare_* run in worker threads
        self.accepts_images = False

    # prompt building (called from threads; the tokenizer is not shared with decoding)
    def prepare_chat(self, turns: list[Turn], model_name: str) -> Prepared:
        messages = text_messages(turns, model_name)
        with self._tok_lock:
            if not getattr(self.tokenizer, "chat_template", None):
                raise bad_request(f"The model {model_name!r} has no chat template; use "
                                  "/v1/completions.", param="messages")
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True)
            except Exception as exc:  # jinja errors: a conversation the template refuses
                raise bad_request(f"The chat template rejected the messages: {exc}",
                                  param="messages") from exc
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Prepared(payload=[int(i) for i in ids], prompt_len=len(ids))

    def prepare_text(self, prompt: str | list[int]) -> Prepared:
        if isinstance(prompt, str):
            with self._tok_lock:
                ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
            bad = [t for t in prompt if t < 0 or (vocab and t >= vocab)]
            if bad:
                raise bad_request(f"Token ids out of range: {bad[:5]}", param="prompt")
            ids = list(prompt)
        if not ids:
            raise bad_request("The prompt is empty.", param="prompt")
        return Prepared(payload=[int(i) for i in ids], prompt_len=len(ids))

    # generation (worker thread only)
    def generate(self, batch: list[Sequence], control: BatchControl) -> None:
        import torch

        prompts: list[list[int]] = [seq.payload for seq in batch]
        width = max(len(p) for p in prompts)
        ids = [[self.pad_id] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        device = self.model.device
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        attention_mask = torch.tensor(mask, dtype=torch.long, device=device)
        seed = batch[0].sampling.seed
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config(batch, self.pad_id, self.eos_token_ids,
                                                    self.bos_id),
                stopping_criteria=make_stopping_criteria(control),
            )
        control.catch_up(out[:, width:].tolist())


def _report_quantization(model: Any) -> None:
    """Log how much of a bitsandbytes model stayed in floating point: bitsandbytes quantizes
    ``nn.Linear`` layers only, so weights kept as plain tensors (transformers 5 fuses MoE experts
    into 3-D parameters) keep their full size."""
    total = 0
    floating = 0
    for p in model.parameters():
        size = p.numel() * p.element_size()
        total += size
        if p.is_floating_point():
            floating += size
    share = floating / total if total else 0.0
    log.info("quantized model: %.1f MiB of weights, %.0f%% of it left in floating point",
             total / 2**20, 100 * share)
    if share > 0.5:
        log.warning("most of the weights are not quantized (bitsandbytes converts nn.Linear "
                    "layers only); expect close to the unquantized memory use")


def native_causal_lm(model_type: object) -> bool:
    """Whether this transformers implements ``model_type`` itself."""
    auto: Any = importlib.import_module("transformers.models.auto.modeling_auto")
    return isinstance(model_type, str) and model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def load_text_backend(cfg: ServeConfig, model_config: dict[str, Any]) -> TextBackend:
    import torch

    tf = _transformers()
    model_type = model_config.get("model_type")
    remote_code = cfg.trust_remote_code
    if remote_code and native_causal_lm(model_type):
        # A snapshot's own modeling code (DeepSeek-V2's, for one) is written against the
        # transformers of its release and breaks on later ones; the native class reads the same
        # weights. The flag still applies to the tokenizer.
        log.info("transformers implements %s natively: its own model code is used, not the "
                 "folder's", model_type)
        remote_code = False
    dtype, compute_dtype = resolve_dtype(cfg.dtype, model_config)
    kwargs: dict[str, Any] = {
        "trust_remote_code": remote_code,
        "local_files_only": True,
        "device_map": cfg.device_map,
        **dtype_kwarg(dtype),
    }
    bnb = bnb_config_kwargs(cfg, compute_dtype)
    if bnb is not None:
        kwargs["quantization_config"] = tf.BitsAndBytesConfig(**bnb)
    log.info("loading %s (dtype=%s, quantization=%s, device_map=%s, cuda devices=%d)",
             cfg.model, dtype, cfg.quantization, cfg.device_map, torch.cuda.device_count())
    tokenizer = tf.AutoTokenizer.from_pretrained(
        cfg.model, trust_remote_code=cfg.trust_remote_code, local_files_only=True)
    model = tf.AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
    model.eval()
    if bnb is not None:
        _report_quantization(model)
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        log.info("layers placed on: %s", sorted({str(v) for v in device_map.values()}))
    return TextBackend(model, tokenizer, cfg.max_batch_size)
