"""Start the operator process: configuration, logging, metrics, then kopf's loop."""

from __future__ import annotations

import logging
from pathlib import Path

import kopf
from prometheus_client import start_http_server

from ..catalog import load_catalog
from ..config import load_config
from . import handlers  # registers the handlers with kopf
from .kube import may_manage_leader_worker_sets
from .operator import Operator

DEFAULT_RESYNC_SECONDS = 600.0


class _WithoutRoutineSuccess(logging.Filter):
    """kopf says "Handler 'x' succeeded." for every event it hands over: noise at info."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and
                    record.getMessage().endswith("' succeeded."))


def _configure_logging(level: str) -> None:
    """JSON lines; at info, the operator's own decisions and every warning, without a line
    per HTTP request or per handled event (--log-level debug shows those)."""
    debug = level == "debug"
    kopf.configure(log_format=kopf.LogFormat.JSON, debug=debug, quiet=level == "warning")
    if not debug:
        for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(_WithoutRoutineSuccess())


def run_operator(namespaces: list[str], config_path: Path | None, catalog_paths: list[Path],
                 metrics_port: int, health_port: int, log_level: str = "info",
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS) -> int:
    config = load_config(config_path)
    catalog = load_catalog(catalog_paths)
    _configure_logging(log_level)
    if metrics_port:
        start_http_server(metrics_port)
    operator = Operator(catalog=catalog, config=config)
    operator.lws_allowed = may_manage_leader_worker_sets(namespaces)
    if operator.lws_allowed:
        handlers.watch_leader_worker_sets()
    else:
        logging.getLogger("modeldeploy").warning(
            "RBAC does not let the operator manage LeaderWorkerSets: replicas larger than one "
            "node wait until it does (chart: rbac.leaderWorkerSets=true)")
    memo = kopf.Memo(operator=operator, resync_seconds=resync_seconds)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, memo=memo,
             liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None)
    return 0
