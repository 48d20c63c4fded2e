"""The gateway's Prometheus metrics, per served model."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("modeldeploy_gateway_requests_total",
                   "Requests answered, by served model and HTTP status", ["model", "code"])
ERRORS = Counter("modeldeploy_gateway_errors_total",
                 "Requests that failed in the gateway or upstream, by kind", ["model", "kind"])
IN_FLIGHT = Gauge("modeldeploy_gateway_in_flight_requests",
                  "Requests in flight (including those waiting for a replica)", ["model"])
TTFB = Histogram("modeldeploy_gateway_time_to_first_byte_seconds",
                 "From the request to the first byte of the engine's answer", ["model"],
                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                          600))
DURATION = Histogram("modeldeploy_gateway_request_duration_seconds",
                     "From the request to the last byte of the answer", ["model"],
                     buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                              600, 1800))
RETRIES = Counter("modeldeploy_gateway_retries_total",
                  "Requests sent again to another replica after a connection failure",
                  ["model"])
SCALE_UPS = Counter("modeldeploy_gateway_scale_events_total",
                    "Replica changes the autoscaler made", ["model", "direction"])

# errors not tied to a known model (unknown model, bad body, bad key) carry this label
NO_MODEL = ""


@dataclass
class ModelMetrics:
    """One model's children, looked up once (a label lookup per request costs more)."""

    in_flight: Gauge
    ttfb: Histogram
    duration: Histogram

    @classmethod
    def of(cls, model: str) -> ModelMetrics:
        return cls(IN_FLIGHT.labels(model), TTFB.labels(model), DURATION.labels(model))
