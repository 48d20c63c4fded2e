"""The gateway's pure parts: routing table, balancing, autoscaling decisions, the operator's
autoscaled status and replicas hand-over, settings files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api import AutoscalingSpec, ModelDeploymentSpec, Phase
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.gateway.autoscale import decide, recommend
from modeldeploy.gateway.balance import Balancer, prompt_prefix
from modeldeploy.gateway.config import (
    GatewayConfigError,
    load_api_keys,
    load_static_routes,
    parse_address_map,
)
from modeldeploy.gateway.handover import handover, replicas_owners
from modeldeploy.gateway.registry import Peers, Registry, ready_addresses, served_name
from modeldeploy.gateway.status import desired_replicas, scaling_phase
from modeldeploy.plan import make_plan
from modeldeploy.reconcile.read import Snapshot
from modeldeploy.reconcile.status import assess
from modeldeploy.render import render

Obj = dict[str, Any]
LITE = {"model": "deepseek-v2-chat", "sizeInBillions": 16}


def md(name: str, ns: str = "llm", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {**LITE, **spec}}


def eps(service: str, name: str, *endpoints: Obj, ns: str = "llm", port: int = 8000) -> Obj:
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "http", "port": port}], "endpoints": list(endpoints)}


def test_served_name_prefers_the_resolved_one() -> None:
    base = md("a", servedModelName="spec-name")
    assert served_name(base) == "spec-name"
    assert served_name({**base, "status": {"resolved": {"servedModelName": "resolved"}}}) == \
        "resolved"
    assert served_name(md("plain")) == "plain"


def test_ready_addresses_skip_unready_and_terminating() -> None:
    found = ready_addresses(eps(
        "a", "a-1", {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
        {"addresses": ["10.0.0.3"], "conditions": {"ready": True, "terminating": True}},
        {"addresses": ["10.0.0.4"]}))
    assert found == [("10.0.0.1", 8000), ("10.0.0.4", 8000)]
    assert ready_addresses({"metadata": {}, "endpoints": [{"addresses": ["10.0.0.1"]}]}) == []


def test_registry_routes_by_served_name_merges_slices_and_maps_addresses() -> None:
    registry = Registry(address_map={"10.0.0.1:8000": "127.0.0.1:1", "*:9000": "127.0.0.1:2"})
    registry.replace_models([md("a"), md("b", servedModelName="bee")])
    registry.replace_slices([
        eps("a", "a-1", {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.9"]}),
        eps("a", "a-2", {"addresses": ["10.0.0.9"]}),  # the same pod in two slices
        eps("b", "b-1", {"addresses": ["10.0.0.5"]}, port=9000),
        eps("a", "other-ns", {"addresses": ["10.9.9.9"]}, ns="elsewhere"),
    ])
    a, b = registry.model("a"), registry.model("bee")
    assert a is not None and b is not None and registry.model("b") is None
    assert registry.addresses(a) == ["127.0.0.1:1", "10.0.0.9:8000"]
    assert registry.addresses(b) == ["127.0.0.1:2"]
    registry.drop_slice({"metadata": {"name": "a-1", "namespace": "llm"}})
    assert registry.addresses(a) == ["10.0.0.9:8000"]
    registry.drop_model(md("a"))
    assert [m.served_name for m in registry.models()] == ["bee"]


def test_the_oldest_deployment_keeps_a_served_name_claimed_twice() -> None:
    registry = Registry()
    registry.replace_models([md("new", ns="x", created="2026-02-01T00:00:00Z",
                                servedModelName="m"),
                             md("old", ns="y", created="2026-01-01T00:00:00Z",
                                servedModelName="m")])
    found = registry.model("m")
    assert found is not None and found.namespace == "y"


def test_a_change_wakes_waiters() -> None:
    async def check() -> None:
        registry = Registry()
        event = registry.changed()
        assert not event.is_set()
        registry.put_model(md("a"))
        assert event.is_set()
        assert not registry.changed().is_set()

    asyncio.run(check())


def test_least_in_flight_with_ties_taken_in_turn() -> None:
    balancer = Balancer()
    picks = []
    for _ in range(4):
        address = balancer.pick(["x", "y"])
        assert address is not None
        balancer.acquire(address)
        picks.append(address)
    assert sorted(picks) == ["x", "x", "y", "y"]
    balancer.release("x")
    balancer.release("x")
    assert balancer.pick(["x", "y"]) == "x"
    assert balancer.pick(["x", "y"], exclude=frozenset({"x"})) == "y"
    assert balancer.pick(["x"], exclude=frozenset({"x"})) is None


def test_a_failed_replica_goes_last_for_a_while() -> None:
    balancer = Balancer(cooldown=60)
    balancer.failed("x")
    assert {balancer.pick(["x", "y"]) for _ in range(4)} == {"y"}
    assert balancer.pick(["x"]) == "x"  # all failed: still try


def test_prefix_affinity_sticks_until_overloaded() -> None:
    balancer = Balancer(affinity_max_imbalance=2)
    addresses = [f"10.0.0.{i}:8000" for i in range(5)]
    home = balancer.pick(addresses, prefix="You are a helpful assistant")
    assert home is not None
    for _ in range(2):
        balancer.acquire(home)
        assert balancer.pick(addresses, prefix="You are a helpful assistant") == home
    balancer.acquire(home)  # 3 more than the least busy: give way
    assert balancer.pick(addresses, prefix="You are a helpful assistant") != home
    for _ in range(3):
        balancer.release(home)
    spread = {balancer.pick(addresses, prefix=f"prompt {i}") for i in range(50)}
    assert len(spread) == 5


def test_prompt_prefix() -> None:
    chat = {"messages": [{"role": "system", "content": "sys"},
                         {"role": "user", "content": [{"type": "text", "text": "hello"},
                                                      {"type": "image_url"}]}]}
    assert prompt_prefix(chat, 100) == "sys\x1ehello"
    assert prompt_prefix(chat, 2) == "sy"
    assert prompt_prefix({"prompt": ["abc", "def"]}, 10) == "abc"
    assert prompt_prefix({"input": "embed me"}, 5) == "embed"
    assert prompt_prefix(chat, 0) is None
    assert prompt_prefix({"prompt": 5}, 10) is None


def test_recommend_between_min_and_max() -> None:
    scaling = AutoscalingSpec(minReplicas=0, maxReplicas=3, targetInFlightPerReplica=4)
    assert [recommend(n, scaling) for n in (0, 1, 4, 5, 12, 100)] == [0, 1, 1, 2, 3, 3]
    assert recommend(0, AutoscalingSpec(minReplicas=1, maxReplicas=2)) == 1


def test_decide_scales_up_at_once_and_down_after_the_delay() -> None:
    scaling = AutoscalingSpec(minReplicas=0, maxReplicas=4, scaleDownDelaySeconds=10)
    assert decide(1, [(0.0, 3)], 0.0, scaling) == 3
    # low load, but not watched for the whole delay yet
    assert decide(2, [(5.0, 0), (6.0, 0)], 6.0, scaling) == 2
    # low for longer than the delay: down to the highest recommendation of the window
    samples = [(0.0, 2), (5.0, 1), (10.0, 0), (14.0, 0)]
    assert decide(3, samples, 14.0, scaling) == 1
    assert decide(3, samples, 30.0, scaling) == 0
    # a replica count outside min..max is brought back
    assert decide(9, [(0.0, 1)], 0.0, scaling) == 4
    assert decide(0, [], 0.0, AutoscalingSpec(minReplicas=2, maxReplicas=3)) == 2


def test_autoscaling_spec_refuses_min_above_max() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        AutoscalingSpec(minReplicas=3, maxReplicas=2)


def test_autoscaled_deployment_leaves_replicas_out(catalog: Catalog,
                                                   config: OperatorConfig) -> None:
    spec = ModelDeploymentSpec.model_validate({**LITE, "autoscaling": {"minReplicas": 0}})
    objects = render(make_plan("md", "llm", spec, catalog, config),
                     cache_complete=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]
    plain = ModelDeploymentSpec.model_validate({**LITE, "replicas": 3})
    objects = render(make_plan("md", "llm", plain, catalog, config),
                     cache_complete=True)
    assert next(o for o in objects if o["kind"] == "Deployment")["spec"]["replicas"] == 3


def _deployment(replicas: int | None, *managers: str) -> Obj:
    fields = [{"manager": m, "fieldsV1": {"f:spec": {"f:replicas": {}}}} for m in managers]
    fields.append({"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}})
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"name": "md", "namespace": "llm", "managedFields": fields},
            "spec": spec}


def test_replicas_are_handed_over_when_only_the_operator_owns_them() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {**LITE, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}})
    assert replicas_owners(_deployment(2, "modeldeploy")) == {"modeldeploy"}
    given = handover(spec, _deployment(5, "modeldeploy"))
    assert given is not None
    assert given.obj == {"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "md", "namespace": "llm"},
                         "spec": {"replicas": 3}}
    assert (given.field_manager, given.partial) == ("modeldeploy-autoscaler", True)
    assert handover(spec, _deployment(2, "modeldeploy", "modeldeploy-autoscaler")) is None
    assert handover(spec, _deployment(2, "horizontal-pod-autoscaler")) is None
    assert handover(ModelDeploymentSpec.model_validate(LITE),
                    _deployment(2, "modeldeploy")) is None


def test_status_of_an_autoscaled_deployment() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {**LITE, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}})
    assert desired_replicas(spec, None) == 0
    zero = {"spec": {"replicas": 0}, "status": {}}
    assert desired_replicas(spec, zero) == 0
    scaled = scaling_phase(spec, assess(Snapshot(deployment=zero), True, 0))
    assert scaled.phase == Phase.SCALED_TO_ZERO
    available = next(c for c in scaled.conditions if c.type == "Available")
    assert available.reason == "ScaledToZero" and "gateway" in available.message
    one = {"spec": {"replicas": 1}, "status": {"readyReplicas": 0}}
    assert desired_replicas(spec, one) == 1
    waking = scaling_phase(spec, assess(Snapshot(deployment=one), True, 1))
    assert waking.phase == Phase.SCALING_UP
    ready = {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    assert scaling_phase(spec, assess(Snapshot(deployment=ready), True, 1)).phase == \
        Phase.READY
    plain = ModelDeploymentSpec.model_validate({**LITE, "replicas": 0})
    assert desired_replicas(plain, one) == 0
    assert scaling_phase(plain, assess(Snapshot(), True, 0)).phase == Phase.SCALED_TO_ZERO


def test_api_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n- {name: a, key: sk-aaaaaaaaaaaaaaaa, models: [m1]}\n"
                    "- {name: b, key: sk-bbbbbbbbbbbbbbbb}\n")
    keys = load_api_keys(path)
    assert keys["sk-aaaaaaaaaaaaaaaa"].allows("m1")
    assert not keys["sk-aaaaaaaaaaaaaaaa"].allows("m2")
    assert keys["sk-bbbbbbbbbbbbbbbb"].allows("anything")
    path.write_text("keys:\n- {name: a, key: short}\n")
    with pytest.raises(GatewayConfigError, match="at least 16 characters"):
        load_api_keys(path)
    path.write_text("keys: [{name: a, key: sk-aaaaaaaaaaaaaaaa}, "
                    "{name: b, key: sk-aaaaaaaaaaaaaaaa}]")
    with pytest.raises(GatewayConfigError, match="one key twice"):
        load_api_keys(path)
    with pytest.raises(GatewayConfigError, match="cannot read"):
        load_api_keys(tmp_path / "missing.yaml")


def test_address_map_and_static_routes(tmp_path: Path) -> None:
    assert parse_address_map(["10.0.0.1:8000=127.0.0.1:9", "*:8000=localhost:1"]) == {
        "10.0.0.1:8000": "127.0.0.1:9", "*:8000": "localhost:1"}
    with pytest.raises(GatewayConfigError, match="expected FROM=TO"):
        parse_address_map(["10.0.0.1=127.0.0.1:9"])
    routes = tmp_path / "routes.yaml"
    routes.write_text("models: [{name: m, endpoints: ['127.0.0.1:1']}]")
    assert load_static_routes(routes) == {"m": ["127.0.0.1:1"]}
    routes.write_text("models: [{name: m, endpoints: [nope]}]")
    with pytest.raises(GatewayConfigError, match="HOST:PORT"):
        load_static_routes(routes)


def test_peers_count_the_gateways_ready_endpoints() -> None:
    peers = Peers()
    assert peers.count() == 1
    peers.replace([eps("gw", "gw-1", {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                       {"addresses": ["10.0.0.3"], "conditions": {"ready": False}}),
                   eps("gw", "gw-2", {"addresses": ["10.0.0.4"]})])
    assert peers.count() == 3
    peers.drop({"metadata": {"name": "gw-1", "namespace": "llm"}})
    assert peers.count() == 1
