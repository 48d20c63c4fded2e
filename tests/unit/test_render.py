"""Rendered objects: valid against the official Kubernetes schemas, with the right flags."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from modeldeploy.api import Hub, ModelDeploymentSpec
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import Plan, make_plan
from modeldeploy.render import Owners, render
from support import KUBERNETES_VERSION

Obj = dict[str, Any]


def seed_cases() -> list[tuple[str, float, str, str, str]]:
    from modeldeploy.catalog import builtin_catalog

    catalog = builtin_catalog()
    cases = []
    for name in ("deepseek-v2-chat", "deepseek-vl2"):
        family = catalog.families[name]
        for spec in family.specs:
            for quant in spec.quantizations:
                for engine in catalog.engines_allowed(family, spec, quant):
                    for hub in spec.sources:
                        cases.append((name, spec.sizeInBillions, quant, engine.value,
                                      hub.value))
    return cases


def make(catalog: Catalog, config: OperatorConfig, **spec: Any) -> Plan:
    return make_plan("md", "llm", ModelDeploymentSpec.model_validate(spec), catalog, config)


def by_kind(objects: list[Obj]) -> dict[str, Obj]:
    return {o["kind"]: o for o in objects}


def engine_command(objects: list[Obj]) -> list[str]:
    container = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    command: list[str] = container["command"]
    return command


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize(("model", "size", "quant", "engine", "hub"), seed_cases())
def test_seed_specs_render_valid_objects(catalog: Catalog, config: OperatorConfig, model: str,
                                         size: float, quant: str, engine: str,
                                         hub: str) -> None:
    plan = make(catalog, config, model=model, sizeInBillions=size, quantization=quant,
                engine=engine, hub=hub, hubTokenSecretRef={"name": "hub-token"},
                env=[{"name": "A", "value": "1"}])
    objects = render(plan)
    assert [o["kind"] for o in objects] == [
        "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Job", "Deployment",
        "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_seed_case_count() -> None:
    # 16B and 236B: 3 engines for none + transformers for 8-bit and 4-bit; vl2 27B, 16B, 3B: 3
    assert len(seed_cases()) == 2 * (2 * 5 + 3 * 3)


def test_vllm_236b_flags(catalog: Catalog, config: OperatorConfig) -> None:
    command = engine_command(render(make(catalog, config, model="deepseek-v2-chat",
                                         sizeInBillions=236)))
    assert command[:3] == ["vllm", "serve", "/models/weights"]
    assert flag(command, "--tensor-parallel-size") == "8"
    assert flag(command, "--max-model-len") == "8192"
    assert "--trust-remote-code" in command


def test_sglang_flags(catalog: Catalog, config: OperatorConfig) -> None:
    command = engine_command(render(make(catalog, config, model="deepseek-v2-chat",
                                         sizeInBillions=236, engine="sglang")))
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    assert flag(command, "--tp-size") == "8"
    assert flag(command, "--model-path") == "/models/weights"
    assert (flag(command, "--host"), flag(command, "--port")) == ("0.0.0.0", "8000")
    assert "--enable-metrics" in command and "--trust-remote-code" in command


def test_vl2_on_vllm_gets_architecture_override(catalog: Catalog,
                                                config: OperatorConfig) -> None:
    command = engine_command(render(make(catalog, config, model="deepseek-vl2",
                                         sizeInBillions=27, engine="vllm")))
    assert flag(command, "--hf-overrides") == '{"architectures": ["DeepseekVLV2ForCausalLM"]}'
    assert flag(command, "--max-model-len") == "4096"


def test_4bit_transformers_is_a_bitsandbytes_load(catalog: Catalog,
                                                  config: OperatorConfig) -> None:
    objects = render(make(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                          quantization="4-bit"))
    command = engine_command(objects)
    assert command[:3] == ["python", "-m", "modeldeploy_serve"]
    assert flag(command, "--quantization") == "4-bit"
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_vl2_transformers_uses_the_vl2_image(catalog: Catalog, config: OperatorConfig) -> None:
    objects = render(make(catalog, config, model="deepseek-vl2", sizeInBillions=3,
                          engine="transformers"))
    container = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == config.images["transformers-vl2"]
    assert "--quantization" not in container["command"]


def test_engine_args_come_last(catalog: Catalog, config: OperatorConfig) -> None:
    command = engine_command(render(make(catalog, config, model="deepseek-v2-chat",
                                         sizeInBillions=16,
                                         engineArgs=["--enforce-eager"])))
    assert command[-1] == "--enforce-eager"


def test_serving_pod(catalog: Catalog, config: OperatorConfig) -> None:
    objects = render(make(catalog, config, model="deepseek-v2-chat", sizeInBillions=236,
                          gpu={"nodeSelector": {"nvidia.com/gpu.product": "H100"}},
                          podAnnotations={"a": "b"}))
    deployment = by_kind(objects)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["weights"]["persistentVolumeClaim"]["readOnly"] is True
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["weights"]["readOnly"] is True
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    # 440 GiB of weights: the startup probe allows over an hour
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 3600
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_download_job(catalog: Catalog, config: OperatorConfig) -> None:
    objects = render(make(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                          hubTokenSecretRef={"name": "hf", "key": "tok"}))
    job = by_kind(objects)["Job"]
    pvc = by_kind(objects)["PersistentVolumeClaim"]
    name = pvc["metadata"]["name"] + "-dl"
    assert job["metadata"]["name"] == name
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "python", "-m", "modeldeploy.loader", "--hub=huggingface",
        "--model-id=deepseek-ai/DeepSeek-V2-Lite-Chat",
        "--revision=85864749cd611b4353ce1decdb286193298f64c7", "--target=/cache",
        "--exclude=original/*", "--exclude=consolidated*", "--exclude=*.gguf",
        f"--job-name={name}"]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "tok"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # its own identity, which may patch this one Job and nothing else
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (name, True)
    role = by_kind(objects)["Role"]
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"],
                              "resourceNames": [name], "verbs": ["patch"]}]
    assert by_kind(objects)["ServiceAccount"]["automountServiceAccountToken"] is False
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"


def test_modelscope_download(catalog: Catalog, config: OperatorConfig) -> None:
    plan = make(catalog, config, model="deepseek-v2-chat", sizeInBillions=16, hub="modelscope",
                hubTokenSecretRef={"name": "ms"})
    job = by_kind(render(plan))["Job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][3:6] == [
        "--hub=modelscope", "--model-id=deepseek-ai/DeepSeek-V2-Lite-Chat", "--revision=master"]
    assert "MODELSCOPE_API_TOKEN" in {e["name"] for e in container["env"]}
    assert plan.hub is Hub.MODELSCOPE


def test_complete_cache_creates_no_job(catalog: Catalog, config: OperatorConfig) -> None:
    plan = make(catalog, config, model="deepseek-v2-chat", sizeInBillions=16)
    kinds = [o["kind"] for o in render(plan, cache_complete=True)]
    assert kinds == ["PersistentVolumeClaim", "Deployment", "Service"]


def test_owner_references(catalog: Catalog, config: OperatorConfig) -> None:
    owner = {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
             "name": "md", "uid": "u1", "controller": True, "blockOwnerDeletion": True}
    shared = [{**owner, "controller": False}, {**owner, "name": "b", "uid": "u2",
                                                "controller": False}]
    objects = by_kind(render(make(catalog, config, model="deepseek-v2-chat",
                                  sizeInBillions=16),
                             owners=Owners(controller=owner, cache=shared)))
    assert objects["Deployment"]["metadata"]["ownerReferences"] == [owner]
    assert objects["Service"]["metadata"]["ownerReferences"] == [owner]
    assert objects["PersistentVolumeClaim"]["metadata"]["ownerReferences"] == shared
    retained = by_kind(render(make(catalog, config, model="deepseek-v2-chat",
                                   sizeInBillions=16, cache={"retainPolicy": "Retain"}),
                              owners=Owners(controller=owner, cache=shared)))
    assert "ownerReferences" not in retained["PersistentVolumeClaim"]["metadata"]


def test_service(catalog: Catalog, config: OperatorConfig) -> None:
    objects = by_kind(render(make(catalog, config, model="deepseek-v2-chat",
                                  sizeInBillions=16, port=9000)))
    port = objects["Service"]["spec"]["ports"][0]
    assert (port["port"], port["targetPort"]) == (9000, "http")
    assert objects["Service"]["spec"]["selector"] == \
        objects["Deployment"]["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("size", "fits_40gb"), [(16, True), (236, False)])
def test_gpu_memory_affinity(catalog: Catalog, config: OperatorConfig, size: int,
                             fits_40gb: bool) -> None:
    objects = by_kind(render(make(catalog, config, model="deepseek-v2-chat",
                                  sizeInBillions=size)))
    terms = objects["Deployment"]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    threshold = int(terms[0]["matchExpressions"][0]["values"][0])
    assert (threshold < 40960) is fits_40gb
    assert threshold < 81559  # an H100 80GB as GPU feature discovery reports it
    assert terms[1]["matchExpressions"][0]["operator"] == "DoesNotExist"


def test_the_operators_gpu_resource_name_is_the_default(catalog: Catalog) -> None:
    amd = OperatorConfig(gpuResourceName="amd.com/gpu")
    container = by_kind(render(make(catalog, amd, model="deepseek-v2-chat",
                                    sizeInBillions=16)))["Deployment"]["spec"]["template"][
        "spec"]["containers"][0]
    assert container["resources"]["limits"] == {"amd.com/gpu": "1"}
    own = by_kind(render(make(catalog, amd, model="deepseek-v2-chat", sizeInBillions=16,
                              gpu={"resourceName": "nvidia.com/mig-3g.40gb"})))
    limits = own["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"]
    assert limits == {"nvidia.com/mig-3g.40gb": "1"}


@pytest.mark.parametrize(("resources", "requests", "limits"), [
    ({"limits": {"memory": "8Gi"}}, {"cpu": "4", "memory": "8Gi"}, {"memory": "8Gi"}),
    ({"limits": {"cpu": 2, "memory": "1Ti"}}, {"cpu": "2", "memory": "16Gi"},
     {"cpu": "2", "memory": "1Ti"}),
    ({"requests": {"memory": "8Gi"}, "limits": {"memory": "10Gi"}},
     {"cpu": "4", "memory": "8Gi"}, {"memory": "10Gi"}),
])
def test_default_requests_stay_within_the_users_limits(
        catalog: Catalog, config: OperatorConfig, resources: Obj, requests: Obj,
        limits: Obj) -> None:
    plan = make(catalog, config, model="deepseek-v2-chat", sizeInBillions=16,
                resources=resources)
    deployment = by_kind(render(plan, cache_complete=True))["Deployment"]
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    got = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    gpu = str(plan.gpus)
    assert got["requests"] == {**requests, "nvidia.com/gpu": gpu}
    assert got["limits"] == {**limits, "nvidia.com/gpu": gpu}


def test_a_request_above_its_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"resources.requests.memory \(2Gi\) must not exceed "
                                         r"resources.limits.memory \(1Gi\)"):
        ModelDeploymentSpec.model_validate({
            "model": "m", "sizeInBillions": 1,
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}})
