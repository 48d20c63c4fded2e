"""``modeldeploy gateway``: the watches, the autoscaler and the HTTP server in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web
from lightkube import AsyncClient
from lightkube.resources.discovery_v1 import EndpointSlice
from prometheus_client import start_http_server

from .autoscale import Autoscaler
from .config import ApiKeys, Settings, load_static_routes
from .kubewatch import KubeScale, Reflector, reflectors
from .metrics import SCALE_UPS
from .registry import SERVICE_NAME_LABEL, Model, Peers, Registry
from .server import Gateway

log = logging.getLogger("modeldeploy.gateway")


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    access = logging.getLogger("modeldeploy.gateway.access")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))  # one JSON object a line
    access.handlers[:] = [out]
    access.propagate = False
    access.setLevel(logging.INFO)


def _on_scale(model: Model, before: int, after: int) -> None:
    SCALE_UPS.labels(model.served_name, "up" if after > before else "down").inc()


async def serve(settings: Settings) -> None:
    registry = Registry(address_map=dict(settings.address_map))
    api_keys = ApiKeys(settings.api_keys_file) if settings.api_keys_file else None
    tasks: list[asyncio.Task[None]] = []
    client: AsyncClient | None = None
    if settings.static_routes is not None:
        registry.set_static(load_static_routes(settings.static_routes))
        gateway = Gateway(settings, registry, api_keys=api_keys)
    else:
        client = AsyncClient()
        watches = reflectors(client, settings.namespaces, registry)
        gateway = Gateway(settings, registry, api_keys=api_keys,
                          ready=lambda: all(w.synced.is_set() for w in watches))
        in_flight = gateway.model_in_flight
        if settings.peers_service:
            peers = Peers()
            namespace, _, service = settings.peers_service.partition("/")
            watches.append(Reflector(client, EndpointSlice, [namespace], peers.replace,
                                     peers.put, peers.drop,
                                     labels={SERVICE_NAME_LABEL: service}))

            def in_flight(model: Model) -> int:
                return gateway.model_in_flight(model) * peers.count()

        autoscaler = Autoscaler(registry, KubeScale(client), in_flight,
                                interval=settings.autoscale_interval, on_scale=_on_scale)
        gateway.autoscaler = autoscaler
        tasks = [asyncio.create_task(w.run(), name="watch") for w in watches]
        for w in watches:
            await w.synced.wait()
        if settings.autoscale:
            tasks.append(asyncio.create_task(autoscaler.run(), name="autoscaler"))
    runner = web.AppRunner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port, backlog=1024).start()
    log.info("gateway listening on %s:%d for %s", settings.host, settings.port,
             ", ".join(settings.namespaces) or "all namespaces")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # finishes the requests in flight (graceful shutdown)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if client is not None:
            await client.close()


def run_gateway(settings: Settings, log_level: str = "info") -> int:
    _logging(log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    try:
        import uvloop  # optional: faster event loop when installed
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0
