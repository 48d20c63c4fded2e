"""The operator's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("modeldeploy_reconciles_total", "Reconciles by result", ["result"])
RECONCILE_SECONDS = Histogram("modeldeploy_reconcile_duration_seconds", "Reconcile duration")
STATUS_WRITES = Counter("modeldeploy_status_writes_total", "Status writes")
CHILD_WRITES = Counter("modeldeploy_child_writes_total", "Applies and deletes of children")
API_CALLS = Counter("modeldeploy_api_requests_total",
                    "Kubernetes API requests made by reconciles", ["verb", "kind"])
QUEUE_DEPTH = Gauge("modeldeploy_queue_depth", "ModelDeployments waiting to be reconciled")
ECHOES = Counter("modeldeploy_own_write_events_total",
                 "Watch events of the operator's own writes (no reconcile queued)")
RESYNC_PASSES = Counter("modeldeploy_resync_passes_total", "Periodic resync passes")
WATCH_EVENTS = Counter("modeldeploy_watch_events_total", "Watch events received", ["kind"])
