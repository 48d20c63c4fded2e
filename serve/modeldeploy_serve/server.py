"""The HTTP server: FastAPI routes, model loading in the background, uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import engine as eng
from .config import ConfigError, ServeConfig, context_length, is_vl2, parse_args, read_model_config
from .detok import TextCollector
from .errors import APIError, bad_request, error_body, model_not_found
from .messages import to_turns
from .metrics import Metrics, MetricsMiddleware
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Sampling,
    parse_json_body,
    refuse_unsupported,
    stop_list,
    validate,
)

log = logging.getLogger("modeldeploy_serve")


class State:
    """What the routes share: configuration, load status, the engine once loaded."""

    def __init__(self, cfg: ServeConfig, model_config: dict[str, Any]) -> None:
        self.cfg = cfg
        self.model_config = model_config
        self.metrics = Metrics(cfg.primary_name)
        self.status = "loading"  # loading | ready | failed
        self.error: BaseException | None = None
        self.backend: Any = None
        self.engine: eng.Engine | None = None
        self.decode_tokenizer: Any = None
        self.max_model_len = cfg.max_model_len or context_length(model_config) or 4096
        self.created = int(time.time())
        self.on_failure: Any = None  # set by main(): stops uvicorn

    # -- loading (a background thread, so /health answers meanwhile) -------------------------
    def load(self) -> None:
        started = time.monotonic()
        try:
            if is_vl2(self.model_config):
                from .vl2 import load_vl2_backend

                backend: Any = load_vl2_backend(self.cfg, self.model_config)
            else:
                from .textmodel import load_text_backend

                backend = load_text_backend(self.cfg, self.model_config)
            own = context_length(self.model_config)
            if self.cfg.max_model_len and own and self.cfg.max_model_len > own:
                log.warning("--max-model-len %d is more than the model's %d",
                            self.cfg.max_model_len, own)
            self.decode_tokenizer = copy.deepcopy(backend.tokenizer)
            engine = eng.Engine(backend, max_batch_size=self.cfg.max_batch_size,
                                max_queue_size=self.cfg.max_queue_size,
                                batch_wait_s=self.cfg.batch_wait_ms / 1000.0,
                                metrics=self.metrics)
            engine.start()
            self.backend, self.engine = backend, engine
            self.status = "ready"
            elapsed = time.monotonic() - started
            self.metrics.load_seconds.set(elapsed)
            self.metrics.model_loaded.labels(model=self.cfg.primary_name).set(1)
            log.info("model loaded in %.1fs; serving %s (max model len %d, batch size %d)",
                     elapsed, ", ".join(self.cfg.served_model_names), self.max_model_len,
                     engine.max_batch_size)
        except BaseException as exc:
            self.status, self.error = "failed", exc
            log.exception("loading the model failed")
            if self.on_failure is not None:
                self.on_failure()

    # -- request helpers ---------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name not in self.cfg.served_model_names:
            raise model_not_found(name, self.cfg.served_model_names)

    def ready_engine(self) -> eng.Engine:
        if self.status == "loading":
            raise APIError(503, "The model is still loading; retry when /health returns 200.",
                           code="model_loading")
        if self.status != "ready" or self.engine is None or not self.engine.alive:
            raise APIError(503, "The model is not available.", code="model_unavailable")
        return self.engine

    def max_new_tokens(self, requested: int | None, prompt_len: int) -> int:
        room = self.max_model_len - prompt_len
        if room <= 0:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"your prompt has {prompt_len} tokens.", param="messages",
                code="context_length_exceeded")
        if requested is None:
            return min(room, self.cfg.default_max_tokens)
        if requested > room:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {prompt_len + requested} tokens ({prompt_len} in the prompt, "
                f"{requested} for the completion).", param="max_tokens",
                code="context_length_exceeded")
        return requested


# -- one choice's generation, as the handlers consume it -------------------------------------
class Choice:
    def __init__(self, state: State, index: int, seq: eng.Sequence, stops: list[str]) -> None:
        self.state = state
        self.index = index
        self.seq = seq
        self.collector = TextCollector(state.decode_tokenizer, stops)
        self.finish_reason: str | None = None

    async def deltas(self) -> AsyncIterator[str]:
        """Text pieces as they become safe to send; sets ``finish_reason`` at the end."""
        first = True
        metrics = self.state.metrics
        async for kind, value in self.seq.stream.events():
            if kind == eng.TOKEN:
                if first:
                    metrics.ttft.observe(time.monotonic() - self.seq.submitted)
                    first = False
                metrics.generated_tokens.inc()
                piece = self.collector.add(int(value))
                if self.collector.stopped:
                    self.seq.stream.cancel()
                    self.finish_reason = "stop"
                    tail = self.collector.finish()
                    if piece + tail:
                        yield piece + tail
                    return
                if piece:
                    yield piece
            elif kind == eng.END:
                self.finish_reason = str(value)
                tail = self.collector.finish()
                if tail:
                    yield tail
                return
            else:
                exc = value if isinstance(value, BaseException) else RuntimeError(str(value))
                raise APIError(500, f"Generation failed: {type(exc).__name__}: {exc}",
                               code="generation_failed") from exc

    async def run(self) -> str:
        return "".join([piece async for piece in self.deltas()])


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _merged(choices: list[Choice]) -> AsyncIterator[tuple[Choice, str | None]]:
    """Deltas of several choices as they come; (choice, None) marks a finished choice."""
    queue: asyncio.Queue[tuple[Choice, str | None, BaseException | None]] = asyncio.Queue()

    async def pump(c: Choice) -> None:
        try:
            async for piece in c.deltas():
                await queue.put((c, piece, None))
            await queue.put((c, None, None))
        except BaseException as exc:
            await queue.put((c, None, exc))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    try:
        remaining = len(choices)
        while remaining:
            c, piece, exc = await queue.get()
            if exc is not None:
                raise exc
            if piece is None:
                remaining -= 1
            yield c, piece
    finally:
        for t in tasks:
            t.cancel()


async def _event_stream(choices: list[Choice], opening: list[bytes],
                        piece: Callable[[Choice, str | None], bytes],
                        usage_head: dict[str, Any] | None,
                        prompt_tokens: int) -> AsyncIterator[bytes]:
    """Server-sent events of a streamed request: the opening chunks, each choice's deltas as
    they come (``piece(choice, None)`` ends a choice), the usage chunk when asked for, and
    ``[DONE]``. An error mid-stream becomes an error event; the choices are cancelled when the
    stream ends, also when the client goes away."""
    try:
        for chunk in opening:
            yield chunk
        async for c, text in _merged(choices):
            yield piece(c, text)
        if usage_head is not None:
            yield _sse({**usage_head, "choices": [],
                        "usage": _usage(prompt_tokens, sum(c.collector.tokens for c in choices))})
    except APIError as exc:
        yield _sse(exc.body())
    finally:
        for c in choices:
            c.seq.stream.cancel()
    yield b"data: [DONE]\n\n"


# -- the app -------------------------------------------------------------------------------------
def create_app(state: State) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="model-loader", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.stop()

    app = FastAPI(title="modeldeploy Transformers server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    cfg = state.cfg

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body(f"Internal error: {type(exc).__name__}", "server_error"),
                            status_code=500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.status == "ready" and state.engine is not None and state.engine.alive:
            return JSONResponse({"status": "ok"})
        if state.status == "loading":
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "unhealthy"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": state.created, "owned_by": "modeldeploy",
                "root": cfg.model, "parent": None, "max_model_len": state.max_model_len}

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list",
                             "data": [model_card(n) for n in cfg.served_model_names]})

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> JSONResponse:
        state.check_model(name)
        return JSONResponse(model_card(name))

    def submit(prepared: Any, n: int, max_new: int, sampling: Sampling,
               loop: asyncio.AbstractEventLoop, engine: eng.Engine) -> list[eng.Sequence]:
        seqs = [eng.Sequence(payload=prepared.payload, prompt_len=prepared.prompt_len,
                             max_new_tokens=max_new, sampling=sampling,
                             stream=eng.TokenStream(loop)) for _ in range(n)]
        engine.submit(seqs)
        state.metrics.prompt_tokens.inc(prepared.prompt_len)
        return seqs

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req: ChatCompletionRequest = validate(ChatCompletionRequest,
                                              parse_json_body(await request.body()))
        state.check_model(req.model)
        refuse_unsupported(req, cfg.max_n)
        stops = stop_list(req.stop)
        engine = state.ready_engine()
        turns = to_turns(req.messages, cfg.max_image_bytes)
        prepared = await asyncio.to_thread(state.backend.prepare_chat, turns, req.model)
        max_new = state.max_new_tokens(req.max_completion_tokens or req.max_tokens,
                                       prepared.prompt_len)
        seqs = submit(prepared, req.n, max_new, Sampling.from_request(req),
                      asyncio.get_running_loop(), engine)
        choices = [Choice(state, i, s, stops) for i, s in enumerate(seqs)]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _chat_stream(choices, rid, created, req.model, prepared.prompt_len,
                             include_usage),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            texts = await asyncio.gather(*(c.run() for c in choices))
        finally:
            for s in seqs:
                s.stream.cancel()
        completion_tokens = sum(c.collector.tokens for c in choices)
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": c.index,
                         "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": c.finish_reason}
                        for c, text in zip(choices, texts, strict=True)],
            "usage": _usage(prepared.prompt_len, completion_tokens),
        })

    def _chat_stream(choices: list[Choice], rid: str, created: int, model: str,
                     prompt_len: int, include_usage: bool) -> AsyncIterator[bytes]:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}

        def chunk(index: int, delta: dict[str, Any], finish: str | None) -> bytes:
            return _sse({**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                              "finish_reason": finish}]})

        def piece(c: Choice, text: str | None) -> bytes:
            if text is None:
                return chunk(c.index, {}, c.finish_reason or "stop")
            return chunk(c.index, {"content": text}, None)

        opening = [chunk(c.index, {"role": "assistant", "content": ""}, None) for c in choices]
        return _event_stream(choices, opening, piece, head if include_usage else None,
                             prompt_len)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req: CompletionRequest = validate(CompletionRequest,
                                          parse_json_body(await request.body()))
        state.check_model(req.model)
        refuse_unsupported(req, cfg.max_n)
        stops = stop_list(req.stop)
        prompts = _prompts(req.prompt)
        if len(prompts) * req.n > cfg.max_queue_size:
            raise bad_request("Too many prompts in one request.", param="prompt")
        engine = state.ready_engine()
        prepared = [await asyncio.to_thread(state.backend.prepare_text, p) for p in prompts]
        max_news = [state.max_new_tokens(req.max_tokens, p.prompt_len) for p in prepared]
        loop = asyncio.get_running_loop()
        sampling = Sampling.from_request(req)
        choices: list[Choice] = []
        echoes: list[str] = []
        try:
            for pi, (prep, max_new) in enumerate(zip(prepared, max_news, strict=True)):
                seqs = submit(prep, req.n, max_new, sampling, loop, engine)
                for j, s in enumerate(seqs):
                    choices.append(Choice(state, pi * req.n + j, s, stops))
                    echoes.append(_echo_text(state, prompts[pi]) if req.echo else "")
        except APIError:  # e.g. the queue filled up half-way: drop what was queued
            for c in choices:
                c.seq.stream.cancel()
            raise
        prompt_tokens = sum(p.prompt_len for p in prepared)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _completion_stream(choices, echoes, rid, created, req.model, prompt_tokens,
                                   include_usage),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            texts = await asyncio.gather(*(c.run() for c in choices))
        finally:
            for c in choices:
                c.seq.stream.cancel()
        return JSONResponse({
            "id": rid, "object": "text_completion", "created": created, "model": req.model,
            "choices": [{"index": c.index, "text": echo + text, "logprobs": None,
                         "finish_reason": c.finish_reason}
                        for c, echo, text in zip(choices, echoes, texts, strict=True)],
            "usage": _usage(prompt_tokens, sum(c.collector.tokens for c in choices)),
        })

    def _completion_stream(choices: list[Choice], echoes: list[str], rid: str,
                           created: int, model: str, prompt_tokens: int,
                           include_usage: bool) -> AsyncIterator[bytes]:
        head = {"id": rid, "object": "text_completion", "created": created, "model": model}

        def chunk(index: int, text: str, finish: str | None) -> bytes:
            return _sse({**head, "choices": [{"index": index, "text": text, "logprobs": None,
                                              "finish_reason": finish}]})

        def piece(c: Choice, text: str | None) -> bytes:
            if text is None:
                return chunk(c.index, "", c.finish_reason or "stop")
            return chunk(c.index, text, None)

        opening = [chunk(c.index, echo, None)
                   for c, echo in zip(choices, echoes, strict=True) if echo]
        return _event_stream(choices, opening, piece, head if include_usage else None,
                             prompt_tokens)

    return app


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("The prompt is empty.", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [[int(t) for t in prompt if isinstance(t, int)]]
    out: list[str | list[int]] = []
    for p in prompt:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, list) and p and all(isinstance(t, int) for t in p):
            out.append([int(t) for t in p])
        else:
            raise bad_request("prompt must be a string, a list of strings, a list of token ids "
                              "or a list of such lists.", param="prompt")
    return out


def _echo_text(state: State, prompt: str | list[int]) -> str:
    if isinstance(prompt, str):
        return prompt
    return str(state.decode_tokenizer.decode(prompt, skip_special_tokens=True))


# -- entry point ---------------------------------------------------------------------------------
def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    # weights come from the mounted cache only; never from a hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    cfg = parse_args(argv)
    _configure_logging(cfg.log_level)
    try:
        model_config = read_model_config(cfg.model)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2

    import uvicorn

    state = State(cfg, model_config)
    app = create_app(state)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port,
                                           log_level=cfg.log_level, access_log=False,
                                           timeout_graceful_shutdown=5))

    def stop() -> None:
        server.should_exit = True

    state.on_failure = stop
    server.run()
    if state.status == "failed":
        return 3 if isinstance(state.error, ConfigError) else 1
    return 0
