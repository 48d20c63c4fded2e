"""The controller's in-memory view of cache claims: who owns which, and whom an event concerns."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("kopf")

from modeldeploy.catalog import builtin_catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import State
from modeldeploy.labels import CACHE_LABEL


def claim(name: str, *owners: tuple[str, str], namespace: str = "llm") -> dict[str, Any]:
    return {"metadata": {
        "name": name, "namespace": namespace, "labels": {CACHE_LABEL: name},
        "ownerReferences": [{"apiVersion": "modeldeploy.dev/v1alpha1",
                             "kind": "ModelDeployment", "name": n, "uid": u}
                            for n, u in owners]}}


def model_deployment(name: str, uid: str, revision: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "llm", "uid": uid},
            "spec": {"model": "deepseek-v2-chat", "sizeInBillions": 16, "revision": revision}}


@pytest.fixture
def state() -> State:
    return State(catalog=builtin_catalog(), config=OperatorConfig())


def test_claims_owned_by_follows_the_watch(state: State) -> None:
    state.observe_claim("ADDED", claim("old", ("a", "uid-a"), ("b", "uid-b")))
    state.observe_claim("ADDED", claim("new", ("a", "uid-a")))
    state.observe_claim("ADDED", claim("elsewhere", ("a", "uid-a"), namespace="other"))
    assert state.claims_owned_by("llm", "uid-a") == ["new", "old"]
    assert state.claims_owned_by("llm", "uid-b") == ["old"]
    state.observe_claim("MODIFIED", claim("old", ("b", "uid-b")))  # a lost an owner
    assert state.claims_owned_by("llm", "uid-a") == ["new"]
    state.observe_claim("DELETED", claim("new", ("a", "uid-a")))
    assert state.claims_owned_by("llm", "uid-a") == []
    assert state.claims_owned_by("other", "uid-a") == ["elsewhere"]


def test_a_claim_event_concerns_its_users_and_its_owners(state: State) -> None:
    key = state.remember(model_deployment("wants", "uid-w", "r1"))
    wanted = state.claims[key]
    assert state.observe_claim("ADDED", claim(wanted)) == [("llm", "wants")]
    # a claim nobody wants any more still concerns its owners, who must let it go
    assert state.observe_claim("MODIFIED", claim("stale", ("gone", "uid-g"),
                                                 ("wants", "uid-w"))) == [
        ("llm", "gone"), ("llm", "wants")]
    assert state.observe_claim("ADDED", claim(wanted, ("wants", "uid-w"))) == [("llm", "wants")]
