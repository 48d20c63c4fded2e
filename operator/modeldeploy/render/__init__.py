"""Plan -> Kubernetes objects as plain dicts, from the plan alone. No I/O.

The set: the weight-cache claim, its download Job and the Job's narrow identity (left out once
the cache is complete; all in ``modeldeploy.cache``), the engine Deployment (a
LeaderWorkerSet when a replica spans nodes) and the Service.
Owner references are passed in, since a shared cache is owned by every ModelDeployment that
uses it.
"""

from __future__ import annotations

from typing import Any

from ..cache.objects import cache_claim, download_identity, download_job
from ..objects import Owners
from ..plan import Plan
from .lws import leader_worker_set
from .service import service
from .serving import deployment

Obj = dict[str, Any]


def render(plan: Plan, *, cache_complete: bool = False,
           owners: Owners | None = None) -> list[Obj]:
    owners = owners or Owners()
    objects = [cache_claim(plan, owners.cache)]
    if not cache_complete:
        objects += [*download_identity(plan, owners.cache), download_job(plan, owners.cache)]
    serving = leader_worker_set if plan.multi_node else deployment
    objects += [serving(plan, owners.controller), service(plan, owners.controller)]
    return objects


__all__ = ["Owners", "deployment", "leader_worker_set", "render", "service"]
