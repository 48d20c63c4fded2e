"""Hostile ModelDeployments against the real API server: every generated body is refused at
admission, or planned to phase Invalid with a sentence, or planned to children that the API
server accepts (server-side dry run, the operator's own apply). Never an exception, and never a
child refused for a reason the CRD schema could have said.

A second test runs the operator itself on a sample of accepted bodies: each gets a phase, no
reconcile fails, and the log has no traceback.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import Cluster
from helpers import MD, get, wait_for
from modeldeploy.api import PlanError
from modeldeploy.catalog import builtin_catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.objects import Owner, Owners
from modeldeploy.plan import plan_for
from modeldeploy.render import render
from operator_process import OperatorProcess

CATALOG = builtin_catalog()
CONFIG = OperatorConfig()
FAILED_RECONCILE = {"APIError", "ReconcileError", "ApplyFailed"}

anything = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=False), st.text(max_size=12),
                     st.lists(st.integers(), max_size=2), st.just({"a": 1}))
# mostly names a user would write, sometimes unicode, spaces and punctuation
words = st.one_of(st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z"),
                  st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z"),
                  st.text(alphabet=string.ascii_letters + string.digits + "-_./ :!éü漢\u200b",
                          max_size=24))
numbers = st.one_of(st.integers(-5, 70), st.integers(-(2**63), 2**63),
                    st.floats(-1e6, 1e12, allow_nan=False), st.sampled_from([0, 0.5, 1e308]))
flags = st.sampled_from([
    "--tensor_parallel_size=8", "--tensor-parallel", "4", "--tp", "--tp_size", "--tp-size=2",
    "--max_model_len=99", "--max-model", "--port=1", "--host", "0.0.0.0", "--enforce-eager",
    "--served-model-name", "x", "--model=/etc", "--trust-remote-code", "-tp", "--", "--seed=1",
    "--download_dir=/tmp", "--disable-log-requests", "--mem-fraction-static=0.8"])
env_names = st.sampled_from(["HF_HUB_OFFLINE", "HOME", "HF_HOME", "VLLM_PORT", "PORT",
                             "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "A", "a-b", "1X", "X Y"])
quantities = st.one_of(st.sampled_from(["40Gi", "1Mi", "1e3", "1.2.3", "-1Gi", "100m", "0",
                                        "1Ei", "9999999Ei", "500G", "1.5Ti", "abc", ""]),
                       st.integers(-10, 10**15), words)
label_maps = st.dictionaries(st.one_of(words, st.sampled_from(
    ["app.kubernetes.io/name", "example.com/team", "a" * 64, "modeldeploy.dev/model"])),
    st.one_of(words, st.just("a" * 64)), max_size=3)


def _mostly(usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any],
            odds: int = 4) -> st.SearchStrategy[Any]:
    """``usual`` with odds-1 in odds (one_of would flatten the branches of both into one
    level, each as likely)."""
    return st.integers(1, odds).flatmap(lambda n: hostile if n == 1 else usual)


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the field's own kind of value, sometimes anything at all."""
    return _mostly(value, anything, odds=10)


specs = st.fixed_dictionaries(
    {"model": _maybe(_mostly(st.sampled_from(sorted(CATALOG.families)[:60]),
                             st.sampled_from(["no-such-model", "", "-x", "a" * 129]), odds=8)),
     "sizeInBillions": _maybe(_mostly(st.sampled_from([0.5, 1.5, 7, 16, 236, 671]), numbers,
                                       odds=8))},
    optional={
        "format": _maybe(st.sampled_from(["pytorch", "gptq", "awq", "fp8", "gguf"])),
        "quantization": _maybe(st.sampled_from(["none", "4-bit", "8-bit", "Int4", "fp8", "q4"])),
        "engine": _maybe(st.sampled_from(["vllm", "sglang", "transformers", "llama.cpp"])),
        "replicas": _maybe(_mostly(st.integers(0, 3), numbers)),
        "revision": _maybe(st.one_of(words, st.sampled_from(
            ["--help", "-x", "../..", "main", "a" * 40, "refs/pr/1"]))),
        "hub": _maybe(st.sampled_from(["huggingface", "modelscope", "s3"])),
        "gpu": _maybe(st.fixed_dictionaries({}, optional={
            "count": _maybe(_mostly(st.sampled_from([1, 2, 4, 8, 16]), numbers)),
            "memoryGiB": _maybe(_mostly(st.sampled_from([24, 40, 80, 141]), numbers)),
            "resourceName": _maybe(st.sampled_from(["nvidia.com/gpu", "cpu", "amd.com/gpu",
                                                    "kubernetes.io/gpu", "a/b/c"])),
            "nodeSelector": _maybe(label_maps)})),
        "cache": _maybe(st.fixed_dictionaries({}, optional={
            "size": quantities, "storageClassName": _maybe(words),
            "accessMode": _maybe(st.sampled_from(["ReadWriteOnce", "ReadWriteMany", "Nope"]))})),
        "resources": _maybe(st.fixed_dictionaries({}, optional={
            "limits": st.fixed_dictionaries({}, optional={"memory": quantities,
                                                          "cpu": quantities})})),
        "engineArgs": _maybe(st.lists(st.one_of(flags, words), max_size=4)),
        "env": _maybe(st.lists(st.fixed_dictionaries(
            {"name": env_names}, optional={"value": _maybe(words)}), max_size=3)),
        "maxModelLen": _maybe(_mostly(st.sampled_from([512, 4096, 32768, 10**6]), numbers)),
        "servedModelName": _maybe(words),
        "port": _maybe(_mostly(st.integers(1, 65535), numbers)),
        "podLabels": _maybe(label_maps),
        "podAnnotations": _maybe(label_maps),
        "hubTokenSecretRef": _maybe(st.fixed_dictionaries(
            {"name": _maybe(words)}, optional={"key": _maybe(words)})),
        "image": _maybe(words),
        "autoscaling": _maybe(st.fixed_dictionaries({}, optional={
            "minReplicas": _mostly(st.integers(0, 3), numbers),
            "maxReplicas": _mostly(st.integers(1, 5), numbers)})),
    })


def _body(name: str, spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name}, "spec": spec}


def _dry_run(cluster: Cluster, namespace: str, objects: list[dict[str, Any]]) -> Any:
    document = {"apiVersion": "v1", "kind": "List", "items": objects}
    return cluster.kubectl("apply", "--server-side", "--dry-run=server",
                           "--field-manager=modeldeploy", "-n", namespace, "-o", "json",
                           "-f", "-", input=json.dumps(document), check=False)


def _admitted(cluster: Cluster, namespace: str, spec: Any) -> dict[str, Any] | None:
    """The body as the API server would store it (defaults applied), or None if refused."""
    result = _dry_run(cluster, namespace, [_body("fuzz", spec)])
    if result.returncode != 0:
        assert result.stderr.strip(), "a refusal without a message"
        assert "Internal error" not in result.stderr, result.stderr
        return None
    out: dict[str, Any] = json.loads(result.stdout)
    stored: dict[str, Any] = out["items"][0] if "items" in out else out
    return stored


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(spec=specs)
def test_admitted_bodies_plan_to_children_the_api_server_accepts(
        cluster: Cluster, namespace: str, crd: None, spec: dict[str, Any]) -> None:
    stored = _admitted(cluster, namespace, spec)
    if stored is None:
        event("refused at admission")
        return
    stored["metadata"] |= {"namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"}
    try:
        plan = plan_for(stored, CATALOG, CONFIG)
    except PlanError as err:
        event(f"Invalid: {err.reason}")
        assert err.reason and len(err.message) > 20, (err.reason, err.message)
        return
    event("planned, children dry-run")
    owners = Owners.of(Owner("fuzz", stored["metadata"]["uid"]), [])
    for complete in (False, True):
        children = render(plan, cache_complete=complete, owners=owners)
        refused = _dry_run(cluster, namespace, children)
        assert refused.returncode == 0, f"spec {spec!r}: {refused.stderr.strip()}"


def test_the_operator_gives_every_admitted_body_a_phase(cluster: Cluster, namespace: str,
                                                        crd: None, tmp_path: Path) -> None:
    admitted: list[str] = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(spec=specs)
    def collect(spec: dict[str, Any]) -> None:
        if len(admitted) < 20 and _admitted(cluster, namespace, spec) is not None:
            name = f"fz{len(admitted)}"
            created = cluster.kubectl("create", "-n", namespace, "-f", "-",
                                      input=json.dumps(_body(name, spec)), check=False)
            if created.returncode == 0:
                admitted.append(name)

    collect()
    assert len(admitted) >= 10, f"only {len(admitted)} generated bodies were admitted"
    operator = OperatorProcess(cluster, namespace, tmp_path).start()
    try:
        def settled() -> list[dict[str, Any]] | None:
            found = [get(cluster, MD, namespace, name) for name in admitted]
            done = [md for md in found if md and (md.get("status") or {}).get("phase") and
                    md["status"].get("observedGeneration") == md["metadata"]["generation"]]
            return done if len(done) == len(admitted) else None

        for md in wait_for("a phase on every admitted body", settled, timeout=180):
            status = md["status"]
            reasons = {c["reason"] for c in status.get("conditions") or []}
            assert not reasons & FAILED_RECONCILE, (md["spec"], status)
            if status["phase"] == "Invalid":
                resolved = [c for c in status["conditions"] if c["type"] == "Resolved"]
                assert resolved and len(resolved[0]["message"]) > 20, status
        log = operator.log()
        assert "Traceback" not in log and '"severity": "error"' not in log, log[-3000:]
        assert operator.process is not None and operator.process.poll() is None
    finally:
        operator.stop()
