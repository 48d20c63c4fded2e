"""The gateway against the real control plane: ModelDeployments and EndpointSlices are real
objects it watches; the engines are real processes on 127.0.0.1 (a fake OpenAI engine for load
and faults, the project's Transformers server with a tiny model). The address map stands in for
pod networking: an endpoint's pod IP is connected to at a local port."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from helpers import get, items, wait_for
from operator_process import OperatorProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "gateway"))

openai = pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from gateway_harness import (  # noqa: E402
    Gateway,
    Process,
    engine_stats,
    start_fake_engine,
    start_gateway,
)

MD = "modeldeployment"


def apply(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def model_deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": "deepseek-v2-chat", "sizeInBillions": 16, **spec}}


def endpoint_slice(service: str, name: str, address: str, ready: bool = True
                   ) -> dict[str, Any]:
    """What the EndpointSlice controller writes for one pod of the Service."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "e2e.modeldeploy.dev"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}]}


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[Process]]:
    started = [start_fake_engine(tmp_path, "fake", replica, chunk_delay=0.05)
               for replica in ("a", "b")]
    try:
        yield started
    finally:
        for engine in started:
            engine.stop()


@pytest.fixture
def two_replicas(cluster: Cluster, crd: None, namespace: str, tmp_path: Path,
                 engines: list[Process]) -> Iterator[tuple[Gateway, list[Process]]]:
    apply(cluster, namespace, model_deployment("fake", replicas=2))
    for i, replica in enumerate(("a", "b")):
        apply(cluster, namespace, endpoint_slice("fake", f"fake-{replica}", f"10.250.0.{i + 1}"))
    mapping = [f"--address-map=10.250.0.{i + 1}:8000=127.0.0.1:{e.port}"
               for i, e in enumerate(engines)]
    gateway = start_gateway(cluster.kubeconfig, tmp_path, *mapping, namespace=namespace)
    try:
        wait_for("both replicas in /v1/models", lambda: _ready_replicas(gateway, "fake") == 2)
        yield gateway, engines
    finally:
        gateway.stop()


def _ready_replicas(gateway: Gateway, model: str) -> int:
    listed = gateway.openai().models.list()
    for entry in listed.data:
        if entry.id == model:
            return int(entry.model_extra["modeldeploy"]["readyReplicas"])
    return -1


def test_openai_client_chat_stream_completions_and_errors(
        two_replicas: tuple[Gateway, list[Process]]) -> None:
    gateway, engines = two_replicas
    client = gateway.openai()

    models = client.models.list()
    assert [m.id for m in models.data] == ["fake"]

    chat = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content.startswith("tok0 tok1")

    # streamed chunk by chunk: the first chunk is in the client's hands while the engine is
    # still generating the rest
    stream = client.chat.completions.create(
        model="fake", stream=True, messages=[{"role": "user", "content": "hi"}],
        extra_body={"n_chunks": 6, "chunk_delay": 0.4})
    first = next(iter(stream))
    assert first.choices[0].delta.content == "tok0 "
    busy = [engine_stats(e)["in_flight"] for e in engines]
    assert sum(busy) == 1, busy
    rest = [c.choices[0].delta.content for c in stream if c.choices]
    assert rest == [f"tok{i} " for i in range(1, 6)]

    completion = client.completions.create(model="fake", prompt="once upon")
    assert completion.choices[0].text.startswith("tok0")
    embedded = client.embeddings.create(model="fake", input=["a", "b"])
    assert len(embedded.data) == 2

    # the engine's own status code and error body come through unchanged
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="fake", max_tokens=0,
                                       messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 400
    assert "max_tokens must be at least 1" in refused.value.message

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = unknown.value.body
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "'nope'" in body["message"] and "known models: fake" in body["message"]

    metrics = gateway.metrics()
    assert metrics['modeldeploy_gateway_requests_total{code="200",model="fake"}'] == 4
    assert metrics['modeldeploy_gateway_requests_total{code="400",model="fake"}'] == 1
    assert metrics['modeldeploy_gateway_requests_total{code="404",model=""}'] == 1
    assert metrics['modeldeploy_gateway_time_to_first_byte_seconds_count{model="fake"}'] == 5
    # JSON access logs, without the prompt
    lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    assert {line["status"] for line in lines} == {200, 400, 404}
    assert all("upon" not in json.dumps(line) for line in lines)


def test_two_replicas_share_the_load_by_in_flight_count(
        two_replicas: tuple[Gateway, list[Process]]) -> None:
    gateway, engines = two_replicas
    client = gateway.openai()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            for _ in client.chat.completions.create(
                    model="fake", stream=True, messages=[{"role": "user", "content": "x"}],
                    extra_body={"n_chunks": 10, "chunk_delay": 0.3}):
                pass
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    stats = [engine_stats(e) for e in engines]
    assert [s["requests"] for s in stats] == [4, 4]
    assert [s["max_in_flight"] for s in stats] == [4, 4]


def test_replica_killed_mid_stream_fails_that_stream_and_the_next_goes_elsewhere(
        two_replicas: tuple[Gateway, list[Process]]) -> None:
    gateway, engines = two_replicas
    client = gateway.openai()
    stream = client.chat.completions.create(
        model="fake", stream=True, messages=[{"role": "user", "content": "x"}],
        extra_body={"n_chunks": 50, "chunk_delay": 0.1})
    chunks = iter(stream)
    first = next(chunks)
    victim = next(e for e in engines if e.name == f"engine-{first.system_fingerprint}")
    survivor = next(e for e in engines if e is not victim)
    victim.kill()
    with pytest.raises(openai.APIError) as broken:
        for _ in chunks:
            pass
    assert "broke off the stream" in str(broken.value)

    for _ in range(4):  # whichever replica the balancer tries, the answer comes from the other
        answer = client.chat.completions.create(model="fake",
                                                messages=[{"role": "user", "content": "x"}])
        assert answer.system_fingerprint == survivor.name.removeprefix("engine-")
    metrics = gateway.metrics()
    assert metrics['modeldeploy_gateway_errors_total{kind="upstream_stream_broken",' \
                   'model="fake"}'] == 1
    assert metrics.get('modeldeploy_gateway_retries_total{model="fake"}', 0) >= 1


def test_prefix_affinity_keeps_a_prompt_prefix_on_one_replica(
        cluster: Cluster, crd: None, namespace: str, tmp_path: Path,
        engines: list[Process]) -> None:
    apply(cluster, namespace, model_deployment("fake", replicas=2))
    apply(cluster, namespace, model_deployment("idle", replicas=0))
    for i, replica in enumerate(("a", "b")):
        apply(cluster, namespace, endpoint_slice("fake", f"fake-{replica}", f"10.250.0.{i + 1}"))
    mapping = [f"--address-map=10.250.0.{i + 1}:8000=127.0.0.1:{e.port}"
               for i, e in enumerate(engines)]
    gateway = start_gateway(cluster.kubeconfig, tmp_path, *mapping,
                            "--prefix-affinity-chars", "64", namespace=namespace)
    try:
        wait_for("both replicas", lambda: _ready_replicas(gateway, "fake") == 2)
        client = gateway.openai()
        system = {"role": "system", "content": "You are the billing assistant of ACME. " * 4}
        for question in ("one", "two", "three", "four", "five", "six"):
            client.chat.completions.create(
                model="fake", messages=[system, {"role": "user", "content": question}])
        counts = sorted(engine_stats(e)["requests"] for e in engines)
        assert counts == [0, 6]
        for i in range(40):  # other prefixes spread over both
            client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": f"question {i}"}])
        assert all(engine_stats(e)["requests"] >= 5 for e in engines)

        # a model without autoscaling and no ready replica: 503 at once, OpenAI's shape
        with pytest.raises(openai.APIStatusError) as unavailable:
            client.chat.completions.create(model="idle",
                                           messages=[{"role": "user", "content": "x"}])
        assert unavailable.value.status_code == 503
        assert unavailable.value.body["code"] == "no_ready_replica"
    finally:
        gateway.stop()


def test_api_keys_limit_models(cluster: Cluster, crd: None, namespace: str, tmp_path: Path,
                               engines: list[Process]) -> None:
    apply(cluster, namespace, model_deployment("fake"))
    apply(cluster, namespace, model_deployment("other"))
    apply(cluster, namespace, endpoint_slice("fake", "fake-a", "10.250.0.1"))
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"name": "team-a", "key": "sk-team-a-0123456789", "models": ["fake"]}]}))
    gateway = start_gateway(cluster.kubeconfig, tmp_path, "--api-keys-file", str(keys),
                            f"--address-map=10.250.0.1:8000=127.0.0.1:{engines[0].port}",
                            "--max-body-bytes", "2000", namespace=namespace)
    try:
        with pytest.raises(openai.AuthenticationError):
            gateway.openai(api_key="sk-wrong-0123456789").models.list()
        client = gateway.openai(api_key="sk-team-a-0123456789")
        wait_for("the model to be listed", lambda: [m.id for m in client.models.list().data])
        assert [m.id for m in client.models.list().data] == ["fake"]
        answer = client.chat.completions.create(model="fake",
                                                messages=[{"role": "user", "content": "x"}])
        assert answer.choices[0].message.content
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other",
                                           messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as too_big:
            client.chat.completions.create(model="fake",
                                           messages=[{"role": "user", "content": "x" * 5000}])
        assert too_big.value.status_code == 413
    finally:
        gateway.stop()


def _phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    md = get(cluster, MD, namespace, name)
    return ((md or {}).get("status") or {}).get("phase")


def _replicas(cluster: Cluster, namespace: str, name: str) -> int | None:
    deployment = get(cluster, "deployment", namespace, name)
    return None if deployment is None else int(deployment["spec"].get("replicas", -1))


CHART = Path(__file__).resolve().parent.parent / "charts" / "modeldeploy"
CHART_GATEWAY = "md-modeldeploy-gateway"  # the gateway's full name for release "md"


def _chart_gateway_account(cluster: Cluster, namespace: str) -> Path:
    """The chart's ServiceAccount and RBAC for a gateway serving ``namespace`` (released into
    it), applied; returns a kubeconfig with that ServiceAccount's token."""
    rendered = cluster.helm(
        "template", "md", str(CHART), "--namespace", namespace, "--set", "gateway.enabled=true",
        "--set", f"gateway.namespaces={{{namespace}}}",
        "--show-only", "templates/gateway-serviceaccount.yaml",
        "--show-only", "templates/gateway-rbac.yaml").stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds == ["Role", "Role", "RoleBinding", "RoleBinding", "ServiceAccount"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rendered)
    return cluster.service_account_kubeconfig(namespace, CHART_GATEWAY)


def test_scale_from_zero_and_back_without_drift(cluster: Cluster, crd: None, namespace: str,
                                                 tmp_path: Path) -> None:
    operator = OperatorProcess(cluster, namespace, tmp_path).start()
    engine = start_fake_engine(tmp_path, "scaled", "a")
    gateway = None
    try:
        doc = model_deployment("scaled", autoscaling={
            "minReplicas": 0, "maxReplicas": 2, "targetInFlightPerReplica": 4,
            "scaleDownDelaySeconds": 6})
        apply(cluster, namespace, doc)
        wait_for("ScaledToZero", lambda: _phase(cluster, namespace, "scaled") == "ScaledToZero",
                 timeout=90)
        assert _replicas(cluster, namespace, "scaled") == 0
        assert items(cluster, "pods", namespace, "-l", "modeldeploy.dev/deployment=scaled") == []

        # the gateway runs with exactly the chart's RBAC for it (its ServiceAccount's token);
        # every pod IP of the engine's port is this local engine
        gateway = start_gateway(_chart_gateway_account(cluster, namespace), tmp_path,
                                f"--address-map=*:8000=127.0.0.1:{engine.port}",
                                "--scale-up-timeout", "60",
                                f"--peers-service={namespace}/{CHART_GATEWAY}",
                                namespace=namespace)
        answer = gateway.openai(timeout=90).chat.completions.create(
            model="scaled", messages=[{"role": "user", "content": "wake up"}])
        assert answer.choices[0].message.content.startswith("tok0")
        assert _replicas(cluster, namespace, "scaled") == 1
        deployment = json.loads(cluster.kubectl(
            "get", "deployment", "scaled", "-n", namespace, "-o", "json",
            "--show-managed-fields").stdout)
        owners = {e["manager"] for e in deployment["metadata"]["managedFields"]
                  if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})}
        assert owners == {"modeldeploy-autoscaler"}
        wait_for("Ready", lambda: _phase(cluster, namespace, "scaled") == "Ready", timeout=30)
        events = items(cluster, "events", namespace,
                       "--field-selector=involvedObject.name=scaled,reason=Phase")
        steps = {e["message"] for e in events}
        assert "ScaledToZero -> ScalingUp" in steps or "ScaledToZero -> Ready" in steps

        # idle for the scale-down delay: back to zero
        wait_for("zero replicas again", lambda: _replicas(cluster, namespace, "scaled") == 0,
                 timeout=60)
        wait_for("ScaledToZero again",
                 lambda: _phase(cluster, namespace, "scaled") == "ScaledToZero", timeout=30)
        metrics = gateway.metrics()
        assert metrics['modeldeploy_gateway_scale_events_total{direction="up",model="scaled"}'] \
            == 1
        assert metrics['modeldeploy_gateway_scale_events_total{direction="down",'
                       'model="scaled"}'] == 1

        # Argo-style: the same manifest applied again changes nothing and writes nothing
        time.sleep(2)

        def versions() -> dict[str, str]:
            found = {}
            for kind in (MD, "deployments", "services", "pvc"):
                for obj in items(cluster, kind, namespace):
                    found[f"{kind}/{obj['metadata']['name']}"] = \
                        obj["metadata"]["resourceVersion"]
            return found

        before, writes = versions(), operator.writes()
        apply(cluster, namespace, doc)
        time.sleep(5)
        assert versions() == before
        assert operator.writes() == writes
        assert _replicas(cluster, namespace, "scaled") == 0
        assert "forbidden" not in gateway.log().lower()
    finally:
        if gateway is not None:
            gateway.stop()
        engine.stop()
        operator.stop()


def test_transformers_server_through_the_gateway(cluster: Cluster, crd: None, namespace: str,
                                                 tmp_path: Path) -> None:
    """The project's Transformers engine server, serving a tiny random DeepSeek-V2, behind the
    gateway: the official client's chat, streamed chat and completions."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("fastapi")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serve" / "tests"))
    from modeldeploy_serve.tiny import build_model_folder
    from serve_harness import SERVED_NAME, start_server, stop_server

    model_dir = tmp_path / "deepseek-v2-tiny"
    build_model_folder(str(model_dir), shape="tiny", seed=0)
    server = start_server(model_dir, tmp_path / "server.log", "--dtype", "float32",
                          "--max-model-len", "512", "--max-batch-size", "4")
    gateway = None
    try:
        port = int(server.url.rsplit(":", 1)[1])
        apply(cluster, namespace, model_deployment("tiny", servedModelName=SERVED_NAME))
        apply(cluster, namespace, endpoint_slice("tiny", "tiny-a", "10.250.0.7"))
        gateway = start_gateway(cluster.kubeconfig, tmp_path,
                                f"--address-map=10.250.0.7:8000=127.0.0.1:{port}",
                                namespace=namespace)
        wait_for("the model in /v1/models", lambda: _ready_replicas(gateway, SERVED_NAME) == 1)
        client = gateway.openai(timeout=120)
        chat = client.chat.completions.create(
            model=SERVED_NAME, max_tokens=8, messages=[{"role": "user", "content": "hello"}])
        assert chat.model == SERVED_NAME and chat.usage.completion_tokens >= 1
        pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
            model=SERVED_NAME, max_tokens=8, stream=True,
            messages=[{"role": "user", "content": "hello"}]) if c.choices]
        assert len(pieces) >= 2
        completion = client.completions.create(model=SERVED_NAME, prompt="once", max_tokens=4)
        assert completion.choices[0].finish_reason in ("length", "stop")
        # the engine's own refusal comes through with its status
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=SERVED_NAME, max_tokens=100000,
                                           messages=[{"role": "user", "content": "x"}])
    finally:
        if gateway is not None:
            gateway.stop()
        stop_server(server)


def test_the_crd_refuses_min_replicas_above_max(cluster: Cluster, crd: None,
                                                namespace: str) -> None:
    doc = model_deployment("bad", autoscaling={"minReplicas": 3, "maxReplicas": 2})
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc),
                              check=False)
    assert refused.returncode != 0
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in refused.stderr
