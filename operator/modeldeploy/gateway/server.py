"""The gateway's HTTP side (aiohttp server and client): OpenAI routes, routing by ``model``,
streaming pass-through, retries before the first byte, scale from zero, keys, limits, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.client_exceptions import (
    ClientConnectionError,
    ClientPayloadError,
    SocketTimeoutError,
)

from .autoscale import Autoscaler
from .balance import Balancer, prompt_prefix
from .config import ApiKey, ApiKeys, Settings
from .metrics import ERRORS, NO_MODEL, REQUESTS, RETRIES, ModelMetrics
from .registry import Model, Registry

log = logging.getLogger(__name__)
access = logging.getLogger("modeldeploy.gateway.access")

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
# hop-by-hop headers (RFC 9110 7.6.1) and those the client library sets itself
_DROP_REQUEST = frozenset({"host", "connection", "keep-alive", "proxy-connection", "te",
                           "trailer", "transfer-encoding", "upgrade", "content-length",
                           "proxy-authorization", "expect"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                            "transfer-encoding", "upgrade", "server", "date"})
_CONNECT_FAILURES = (ClientConnectionError,)


class GatewayError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = (
            status, message, kind, code, param)
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _sse_error(message: str) -> bytes:
    payload = {"error": {"message": message, "type": "upstream_error", "param": None,
                         "code": "upstream_disconnected"}}
    return f"data: {json.dumps(payload)}\n\n".encode()


class Gateway:
    def __init__(self, settings: Settings, registry: Registry,
                 autoscaler: Autoscaler | None = None, api_keys: ApiKeys | None = None,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.settings, self.registry = settings, registry
        self.autoscaler, self.api_keys, self.ready = autoscaler, api_keys, ready
        self.balancer = Balancer(settings.affinity_max_imbalance)
        self.in_flight: dict[tuple[str, str], int] = {}
        self._metrics: dict[str, ModelMetrics] = {}
        self.session: ClientSession | None = None

    # -- wiring ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.body_limit,
                              middlewares=[self._errors])
        for route in ROUTES:
            app.router.add_post(route, self.proxy)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        s = self.settings
        self.session = ClientSession(
            connector=TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            timeout=ClientTimeout(total=s.request_timeout, sock_connect=s.connect_timeout,
                                  sock_read=s.read_timeout),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def _stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as err:
            return err.response()
        except web.HTTPException as err:
            if err.status == 413:
                return GatewayError(413, f"the request body is larger than the gateway's limit "
                                    f"of {self.settings.body_limit} bytes",
                                    "invalid_request_error", "request_too_large").response()
            if err.status in (404, 405):
                return GatewayError(err.status, f"{request.method} {request.path} is not an "
                                    f"endpoint of this gateway; it serves GET /v1/models and "
                                    f"POST {', '.join(ROUTES)}", "invalid_request_error",
                                    "unknown_url").response()
            raise

    async def healthz(self, _request: web.Request) -> web.Response:
        return _text("ok")

    async def readyz(self, _request: web.Request) -> web.Response:
        if self.ready():
            return _text("ok")
        return _text("watches not synced yet", 503)

    def _model_metrics(self, name: str) -> ModelMetrics:
        found = self._metrics.get(name)
        if found is None:
            found = self._metrics[name] = ModelMetrics.of(name)
        return found

    def model_in_flight(self, model: Model) -> int:
        return self.in_flight.get(model.key, 0)

    # -- authentication ----------------------------------------------------------------------
    def _key(self, request: web.Request) -> ApiKey | None:
        if self.api_keys is None:
            return None
        self.api_keys.reload_if_changed()
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        key = self.api_keys.keys.get(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise GatewayError(401, "a valid API key is required: send 'Authorization: Bearer "
                               "<key>'", "invalid_request_error", "invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})
        return key

    def _visible(self, key: ApiKey | None) -> list[Model]:
        return [m for m in self.registry.models() if key is None or key.allows(m.served_name)]

    # -- /v1/models --------------------------------------------------------------------------
    async def list_models(self, request: web.Request) -> web.Response:
        key = self._key(request)
        data = [{"id": m.served_name, "object": "model", "created": m.created,
                 "owned_by": m.namespace,
                 "modeldeploy": {"namespace": m.namespace, "name": m.name, "phase": m.phase,
                                 "readyReplicas": len(self.registry.addresses(m))}}
                for m in self._visible(key)]
        return web.json_response({"object": "list", "data": data})

    # -- the proxy ---------------------------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        record: dict[str, Any] = {"method": request.method, "path": request.path,
                                  "remote": request.remote}
        status, model_label = 500, NO_MODEL
        try:
            key = self._key(request)
            if key is not None:
                record["key"] = key.name
            body = await request.read()
            name, parsed = _model_name(body)
            record["model"] = name
            model = self.registry.model(name)
            if model is None or (key is not None and not key.allows(name)):
                known = [m.served_name for m in self._visible(key)]
                raise GatewayError(404, f"the model {name!r} does not exist here; known "
                                   f"models: {', '.join(known) or '(none)'}",
                                   "invalid_request_error", "model_not_found", "model")
            model_label = name
            response, status = await self._forward(request, model, body, parsed, record,
                                                   started)
            return response
        except GatewayError as err:
            status = err.status
            record["error"] = err.code
            ERRORS.labels(model_label, err.code or err.kind).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            REQUESTS.labels(model_label, str(status)).inc()
            if model_label:
                self._model_metrics(model_label).duration.observe(elapsed)
            if self.settings.access_log:
                record.update(status=status, duration_ms=round(elapsed * 1000, 2))
                access.info(json.dumps(record, separators=(",", ":")))

    async def _forward(self, request: web.Request, model: Model, body: bytes,
                       parsed: dict[str, Any], record: dict[str, Any],
                       started: float) -> tuple[web.StreamResponse, int]:
        metrics = self._model_metrics(model.served_name)
        self.in_flight[model.key] = self.in_flight.get(model.key, 0) + 1
        metrics.in_flight.inc()
        try:
            addresses = self.registry.addresses(model)
            if not addresses:
                model, addresses = await self._wait_for_replica(model, record)
            prefix = prompt_prefix(parsed, self.settings.prefix_affinity_chars)
            headers = self._upstream_headers(request)
            tried: set[str] = set()
            while True:
                address = self.balancer.pick(addresses, prefix, frozenset(tried))
                if address is None:
                    raise GatewayError(502, f"no replica of {model.served_name!r} accepted the "
                                       f"connection (tried {len(tried)})", "upstream_error",
                                       "upstream_unreachable")
                self.balancer.acquire(address)
                try:
                    assert self.session is not None
                    try:
                        upstream = await self.session.post(
                            f"http://{address}{request.path}", data=body, headers=headers)
                    except (TimeoutError, SocketTimeoutError) as err:
                        raise GatewayError(504, f"replica {address} of {model.served_name!r} "
                                           f"did not answer in time", "upstream_error",
                                           "upstream_timeout") from err
                    except _CONNECT_FAILURES as err:
                        # nothing came back: safe to send to another replica
                        tried.add(address)
                        self.balancer.failed(address)
                        log.warning("replica %s of %s failed before answering: %s", address,
                                    model.served_name, err)
                        if len(tried) > self.settings.retries:
                            raise GatewayError(502, f"replica {address} of "
                                               f"{model.served_name!r} failed before "
                                               f"answering: {err}", "upstream_error",
                                               "upstream_unreachable") from err
                        RETRIES.labels(model.served_name).inc()
                        addresses = self.registry.addresses(model) or addresses
                        continue
                    record["upstream"] = address
                    if tried:
                        record["retries"] = len(tried)
                    return await self._relay(request, upstream, model, metrics, record,
                                             started), upstream.status
                finally:
                    self.balancer.release(address)
        finally:
            self.in_flight[model.key] -= 1
            if not self.in_flight[model.key]:
                del self.in_flight[model.key]
            metrics.in_flight.dec()

    async def _wait_for_replica(self, model: Model, record: dict[str, Any]
                                ) -> tuple[Model, list[str]]:
        """No ready replica: an autoscaled model is scaled up (from zero) and the request
        waits, at most scale_up_timeout; others are answered 503 at once."""
        if model.autoscaling is None or self.autoscaler is None:
            raise GatewayError(503, f"the model {model.served_name!r} has no ready replica "
                               f"(phase {model.phase})", "service_unavailable",
                               "no_ready_replica", headers={"Retry-After": "5"})
        record["waited_for_replica"] = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.scale_up_timeout
        try:
            await self.autoscaler.wake(model)
        except Exception as err:
            raise GatewayError(503, f"could not scale {model.served_name!r} up: {err}",
                               "service_unavailable", "scale_up_failed") from err
        name = model.served_name
        while True:
            current = self.registry.model(name)
            if current is None:
                raise GatewayError(404, f"the model {name!r} was deleted while waiting",
                                   "invalid_request_error", "model_not_found", "model")
            addresses = self.registry.addresses(current)
            if addresses:
                return current, addresses
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GatewayError(503, f"no replica of {name!r} became ready within "
                                   f"{self.settings.scale_up_timeout:g}s (phase "
                                   f"{current.phase})", "service_unavailable",
                                   "scale_up_timeout", headers={"Retry-After": "10"})
            try:
                await asyncio.wait_for(self.registry.changed().wait(), remaining)
            except TimeoutError:
                continue

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        if self.api_keys is not None:
            headers.pop("Authorization", None)  # the gateway's key, not the engine's
            headers.pop("authorization", None)
        forwarded = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded}, {remote}" if forwarded else remote
        return headers

    async def _relay(self, request: web.Request, upstream: Any, model: Model,
                     metrics: ModelMetrics, record: dict[str, Any],
                     started: float) -> web.StreamResponse:
        """The engine's answer, passed through chunk by chunk as it arrives."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _DROP_RESPONSE:
                response.headers.add(k, v)
        event_stream = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        sent, complete = 0, False
        try:
            await response.prepare(request)
            first = True
            try:
                async for chunk in upstream.content.iter_any():
                    if first:
                        metrics.ttfb.observe(time.perf_counter() - started)
                        first = False
                    await response.write(chunk)
                    sent += len(chunk)
            except (ClientPayloadError, ClientConnectionError, TimeoutError) as err:
                if isinstance(err, ConnectionResetError) or request.transport is None or \
                        request.transport.is_closing():
                    raise  # the client went away: below
                # after the first byte there is no retry: the stream ends with an error
                ERRORS.labels(model.served_name, "upstream_stream_broken").inc()
                record["error"] = "upstream_stream_broken"
                log.warning("replica %s of %s broke off after %d bytes: %s",
                            record.get("upstream"), model.served_name, sent, err)
                if event_stream:
                    await response.write(_sse_error(
                        f"the replica serving {model.served_name!r} broke off the stream: "
                        f"{err.__class__.__name__}"))
                    await response.write_eof()
                elif request.transport is not None:
                    request.transport.abort()  # a cut body must not look complete
                record["bytes"] = sent
                return response
            complete = True
            with contextlib.suppress(ConnectionResetError, ClientConnectionError):
                await response.write_eof()  # a client may hang up once it has the last event
        except (ConnectionResetError, ClientConnectionError) as err:
            ERRORS.labels(model.served_name, "client_disconnected").inc()
            record["error"] = "client_disconnected"
            log.debug("client left %s: %s", model.served_name, err)
        finally:
            if complete:
                upstream.release()  # read to the end: the connection goes back to the pool
            else:
                upstream.close()  # an unread rest must not go back to the pool
        record["bytes"] = sent
        return response


def _model_name(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise GatewayError(400, f"the request body is not valid JSON: {err}",
                           "invalid_request_error", "invalid_json") from err
    if not isinstance(parsed, dict):
        raise GatewayError(400, "the request body must be a JSON object",
                           "invalid_request_error", "invalid_json")
    name = parsed.get("model")
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "the request body needs a 'model' (the served model name, "
                           "see GET /v1/models)", "invalid_request_error", "missing_model",
                           "model")
    return name, parsed


def _text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status)


__all__ = ["ClientError", "Gateway", "GatewayError"]
