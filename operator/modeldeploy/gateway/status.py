"""What an autoscaled ModelDeployment's status says. Pure: no I/O.

With ``spec.autoscaling`` the wanted replicas are not in the spec but in the Deployment (set by
the gateway's autoscaler or an HPA); the phase says ``ScaledToZero`` while there are none and
``ScalingUp`` while the first one of a scale from zero starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..api import AVAILABLE, ConditionStatus, ModelDeploymentSpec, Phase, Why
from ..reconcile.status import Assessment

Obj = dict[str, Any]

SCALED_TO_ZERO_MESSAGE = "scaled to zero: a request through the gateway starts a replica"


def desired_replicas(spec: ModelDeploymentSpec, deployment: Obj | None) -> int:
    """The replicas the Deployment should have: the spec's, or the scaler's when autoscaled
    (minReplicas until the Deployment exists)."""
    if spec.autoscaling is None:
        return spec.replicas
    live = ((deployment or {}).get("spec") or {}).get("replicas")
    if live is None:
        return spec.autoscaling.minReplicas
    return int(live)


def scaling_phase(spec: ModelDeploymentSpec, assessment: Assessment) -> Assessment:
    """The assessment with the autoscaling phases: ScaledToZero at 0 replicas, ScalingUp while
    the first replica after zero starts. Unchanged without autoscaling."""
    scaling = spec.autoscaling
    if scaling is None or assessment.phase not in (Phase.READY, Phase.STARTING,
                                                   Phase.SCALED_TO_ZERO):
        return assessment
    available = next((c for c in assessment.conditions if c.type == AVAILABLE), None)
    if assessment.replicas == 0 and available is not None and \
            available.reason == Why.SCALED_TO_ZERO:
        conditions = [c.model_copy(update={"message": SCALED_TO_ZERO_MESSAGE})
                      if c.type == AVAILABLE else c for c in assessment.conditions]
        return dataclasses.replace(assessment, phase=Phase.SCALED_TO_ZERO,
                                   conditions=conditions)
    starting = available is not None and available.status == ConditionStatus.FALSE and \
        available.reason == Why.STARTING
    if scaling.minReplicas == 0 and assessment.ready_replicas == 0 and starting:
        return dataclasses.replace(assessment, phase=Phase.SCALING_UP)
    return assessment
