"""Which failed writes are quiet (no condition, no Warning): by table, from the API server's
own Status bodies."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from modeldeploy.runtime.operator import CONFLICT, TERMINATING, quiet_failure


def api_error(body: dict[str, Any]) -> ApiError:
    return ApiError(status=Status.from_dict({"kind": "Status", "apiVersion": "v1", **body}))


# the bodies as kube-apiserver sends them (NamespaceLifecycle admission, optimistic concurrency,
# quota admission)
TERMINATING_BODY = {
    "status": "Failure", "code": 403, "reason": "Forbidden",
    "message": 'jobs.batch "dl-1" is forbidden: unable to create new content in namespace t1 '
               "because it is being terminated",
    "details": {"name": "dl-1", "group": "batch", "kind": "jobs",
                "causes": [{"reason": "NamespaceTerminating",
                            "message": "namespace t1 is being terminated",
                            "field": "metadata.namespace"}]}}
CONFLICT_BODY = {
    "status": "Failure", "code": 409, "reason": "Conflict",
    "message": 'Operation cannot be fulfilled on modeldeployments.modeldeploy.dev "a": the '
               "object has been modified; please apply your changes to the latest version "
               "and try again"}
EXISTS_BODY = {"status": "Failure", "code": 409, "reason": "AlreadyExists",
               "message": 'services "a" already exists'}
QUOTA_BODY = {"status": "Failure", "code": 403, "reason": "Forbidden",
              "message": 'persistentvolumeclaims "c" is forbidden: exceeded quota: storage'}


@pytest.mark.parametrize(("error", "quiet"), [
    (api_error(TERMINATING_BODY), TERMINATING),
    (api_error({**TERMINATING_BODY, "details": None}), TERMINATING),
    (api_error(CONFLICT_BODY), CONFLICT),
    (api_error(EXISTS_BODY), None),
    (api_error(QUOTA_BODY), None),
    (ConnectionError("refused"), None),
])
def test_quiet_failures(error: Exception, quiet: str | None) -> None:
    assert quiet_failure(error) == quiet
