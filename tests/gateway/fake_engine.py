"""A small OpenAI-compatible engine for the gateway's load and fault tests and its benchmark.

It answers /v1/models, /v1/chat/completions and /v1/completions (streamed as server-sent events
or not), /v1/embeddings, and /stats (requests seen, in flight now, most in flight at once).
Each replica names itself in the ``X-Replica`` header and the answers' ``system_fingerprint``.
A ``max_tokens`` below 1 is refused with OpenAI's 400 error, as real engines do.

    python tests/gateway/fake_engine.py --port 41001 --model tiny --replica a \
        [--chunks 8] [--chunk-delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web


class FakeEngine:
    def __init__(self, model: str, replica: str, chunks: int, chunk_delay: float) -> None:
        self.model, self.replica = model, replica
        self.chunks, self.chunk_delay = chunks, chunk_delay
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prefixes: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/v1/completions", self.generate)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, _r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(self, _r: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "in_flight": self.in_flight,
                                  "max_in_flight": self.max_in_flight,
                                  "prefixes": self.prefixes})

    async def models(self, _r: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})

    def _error(self, status: int, message: str, param: str | None = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "BadRequestError",
                                            "param": param, "code": status}}, status=status)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": [0.0, 1.0, float(i)]}
                for i in range(len(inputs))]
        return web.json_response({"object": "list", "data": data, "model": self.model,
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}},
                                 headers={"X-Replica": self.replica})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        if body.get("model") != self.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "model")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if isinstance(max_tokens, int) and max_tokens < 1:
            return self._error(400, f"max_tokens must be at least 1, got {max_tokens}.",
                               "max_tokens")
        chat = request.path.endswith("/chat/completions")
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        prompt = body.get("messages", [{}])[-1].get("content", "") if chat else \
            body.get("prompt", "")
        self.prefixes.append(str(prompt)[:32])
        try:
            chunks = int(body.get("n_chunks", self.chunks))
            delay = float(body.get("chunk_delay", self.chunk_delay))
            if body.get("stream"):
                return await self._stream(request, chat, chunks, delay)
            if delay:
                await asyncio.sleep(delay * chunks)
            text = "".join(f"tok{i} " for i in range(chunks))
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return web.json_response({
                "id": f"cmpl-{self.requests}", "created": int(time.time()), "model": self.model,
                "object": "chat.completion" if chat else "text_completion",
                "system_fingerprint": self.replica, "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": chunks,
                          "total_tokens": chunks + 1}}, headers={"X-Replica": self.replica})
        finally:
            self.in_flight -= 1

    async def _stream(self, request: web.Request, chat: bool, chunks: int,
                      delay: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "X-Replica": self.replica})
        await response.prepare(request)
        created = int(time.time())
        for i in range(chunks):
            if delay:
                await asyncio.sleep(delay)
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": f"tok{i} "},
                                          "finish_reason": None}
            else:
                choice = {"index": 0, "text": f"tok{i} ", "finish_reason": None}
            chunk = {"id": f"cmpl-{self.requests}", "created": created, "model": self.model,
                     "object": "chat.completion.chunk" if chat else "text_completion",
                     "system_fingerprint": self.replica, "choices": [choice]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--replica", default="a")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    engine = FakeEngine(args.model, args.replica, args.chunks, args.chunk_delay)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    web.run_app(engine.app(), host=args.host, port=args.port, access_log=None,
                print=lambda *_a: None, backlog=1024,
                loop=uvloop.new_event_loop() if uvloop else None)


if __name__ == "__main__":
    main()
