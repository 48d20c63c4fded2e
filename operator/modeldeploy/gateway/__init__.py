"""The OpenAI gateway: one endpoint for every ModelDeployment.

Routes by the request's ``model``, balances by in-flight requests, streams, scales from zero and
autoscales. The modules ``status`` and ``handover`` are the operator's side of autoscaling and
import nothing beyond the operator's own dependencies.
"""

# The field manager the autoscaler writes a Deployment's replicas with (the scale subresource),
# and the one the operator hands the field over to when autoscaling is on.
AUTOSCALER_FIELD_MANAGER = "modeldeploy-autoscaler"
