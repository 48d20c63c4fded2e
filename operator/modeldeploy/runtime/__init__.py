"""The operator process: kopf wiring, the work queue, metrics and the Kubernetes client."""
