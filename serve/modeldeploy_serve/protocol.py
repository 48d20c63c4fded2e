"""OpenAI request schemas (pydantic) and the checks that turn a bad request into a 4xx."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import APIError, bad_request


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)  # extension (vLLM's): -1 or 0 = off
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)  # extension
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False  # extension (vLLM's): generate max_tokens tokens, for benchmarks


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise bad_request("The request body is empty; a JSON object is expected.")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return data


def validate(model_cls: type[_Sampling], data: dict[str, Any]) -> Any:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
        raise APIError(400, message, param=loc or None, code="invalid_value") from exc


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > 4:
        raise bad_request("At most 4 stop sequences are allowed.", param="stop")
    return [s for s in items if s]


def refuse_unsupported(req: _Sampling, max_n: int) -> None:
    """Refuse, with a 400, the options this server does not implement (never ignore silently)."""
    if req.n > max_n:
        raise bad_request(f"n must be at most {max_n} on this server.", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value not in (None, 0, 0.0):
            raise bad_request(f"{name} is not supported by this server (use "
                              "repetition_penalty).", param=name)
    if req.logit_bias:
        raise bad_request("logit_bias is not supported by this server.", param="logit_bias")
    if isinstance(req, ChatCompletionRequest):
        if req.logprobs:
            raise bad_request("logprobs are not supported by this server.", param="logprobs")
        if req.tools and req.tool_choice != "none":
            raise bad_request("Tool calls are not supported by this server.", param="tools")
        if req.response_format and req.response_format.get("type", "text") != "text":
            raise bad_request("Only response_format {'type': 'text'} is supported.",
                              param="response_format")
    if isinstance(req, CompletionRequest):
        if req.logprobs is not None:
            raise bad_request("logprobs are not supported by this server.", param="logprobs")
        if req.suffix:
            raise bad_request("suffix is not supported by this server.", param="suffix")
        if req.best_of not in (None, req.n):
            raise bad_request("best_of other than n is not supported.", param="best_of")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request; requests with equal settings can share a batch."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    seed: int | None
    ignore_eos: bool = False

    @classmethod
    def from_request(cls, req: _Sampling) -> Sampling:
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        top_k = 0 if req.top_k in (None, -1) else int(req.top_k)
        rep = 1.0 if req.repetition_penalty is None else req.repetition_penalty
        do_sample = temperature > 0.0
        if not do_sample:  # greedy: the other sampling knobs do nothing
            return cls(False, 0.0, 1.0, 0, rep, None, req.ignore_eos)
        return cls(True, temperature, top_p, top_k, rep, req.seed, req.ignore_eos)
