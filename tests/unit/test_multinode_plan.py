"""Replicas larger than one node: the layout the planner chooses or refuses, the LeaderWorkerSet
rendered for it, and decide()'s actions and status (pure: dict fixtures, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from modeldeploy.actions import Apply, Delete
from modeldeploy.api import ModelDeploymentSpec, PlanError, Reason
from modeldeploy.cache.decide import wanted_claim
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.objects import Owner, Owners
from modeldeploy.plan import Plan, make_plan
from modeldeploy.reconcile.decide import decide
from modeldeploy.reconcile.read import Snapshot
from modeldeploy.render import render
from modeldeploy.render.lws import leader_worker_set
from modeldeploy.render.serving import deployment
from support import KUBERNETES_VERSION

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
ME = Owner("md", "uid-md")
OWNERS = Owners.of(ME, [ME])
SHARED = {"accessMode": "ReadWriteMany"}


def plan(catalog: Catalog, config: OperatorConfig, **spec: Any) -> Plan:
    full = {"model": "deepseek-v2-chat", "sizeInBillions": 236, **spec}
    return make_plan("md", "llm", ModelDeploymentSpec.model_validate(full), catalog, config)


def refusal(catalog: Catalog, config: OperatorConfig, **spec: Any) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan(catalog, config, **spec)
    return info.value


# spec beyond deepseek-v2-chat 236B -> (nodes, GPUs per node, TP, PP, split)
LAYOUTS = [
    # 528 GiB at 36 GiB usable per 40 GB GPU: 15 GPUs, the fewest nodes of at most 8
    ({"gpu": {"memoryGiB": 40}}, (2, 8, 8, 2, "2 nodes x 8 GPUs, TP 8 x PP 2")),
    ({"engine": "sglang", "gpu": {"memoryGiB": 40}},
     (2, 8, 16, 1, "2 nodes x 8 GPUs, TP 16 x PP 1")),
    # asked for: the smallest power of two per node that holds it
    ({"gpu": {"memoryGiB": 40, "nodes": 4}}, (4, 4, 4, 4, "4 nodes x 4 GPUs, TP 4 x PP 4")),
    ({"gpu": {"memoryGiB": 40, "nodes": 3}}, (3, 8, 8, 3, "3 nodes x 8 GPUs, TP 8 x PP 3")),
    # on 80 GB GPUs it fits one node, unless asked otherwise
    ({"gpu": {"nodes": 2}}, (2, 4, 4, 2, "2 nodes x 4 GPUs, TP 4 x PP 2")),
    ({"gpu": {"count": 16}}, (2, 8, 8, 2, "2 nodes x 8 GPUs, TP 8 x PP 2")),
    ({"gpu": {"count": 16, "nodes": 4}}, (4, 4, 4, 4, "4 nodes x 4 GPUs, TP 4 x PP 4")),
    # 21 GPUs of 28 GB: vLLM on 3 nodes; SGLang's TP spans every GPU of the group and must
    # be a power of two, so 4 nodes
    ({"gpu": {"memoryGiB": 28}}, (3, 8, 8, 3, "3 nodes x 8 GPUs, TP 8 x PP 3")),
    ({"engine": "sglang", "gpu": {"memoryGiB": 28}},
     (4, 8, 32, 1, "4 nodes x 8 GPUs, TP 32 x PP 1")),
]


@pytest.mark.parametrize(("spec", "layout"), LAYOUTS)
def test_layout(catalog: Catalog, config: OperatorConfig, spec: Obj,
                layout: tuple[int, int, int, int, str]) -> None:
    planned = plan(catalog, config, cache=SHARED, **spec)
    assert (planned.nodes, planned.gpus, planned.tensor_parallel, planned.pipeline_parallel,
            planned.split) == layout
    assert planned.multi_node and planned.gpus_per_replica == layout[0] * layout[1]
    assert planned.engine_input.nodes == layout[0]


@pytest.mark.parametrize("spec", [{}, {"gpu": {"nodes": 1}}, {"gpu": {"count": 8}},
                                  {"gpu": {"memoryGiB": 40, "count": 8}, "quantization": "8-bit"}])
def test_what_fits_one_node_stays_one_node(catalog: Catalog, config: OperatorConfig,
                                           spec: Obj) -> None:
    planned = plan(catalog, config, cache=SHARED, **spec)
    assert (planned.nodes, planned.pipeline_parallel, planned.multi_node) == (1, 1, False)


REFUSALS = [
    # the planner had to go beyond one node: the refusal says why, then what works
    ({"gpu": {"memoryGiB": 40}}, Reason.NO_GPU_FITS,
     ["but a node holds at most 8;", "on 2 nodes x 8 GPUs needs a cache every node can mount",
      "cache.accessMode is ReadWriteOnce: set cache.accessMode: ReadWriteMany",
      "NFS, CephFS, Amazon EFS, Google Filestore, Lustre"]),
    ({"gpu": {"nodes": 2}}, Reason.CACHE_NOT_SHARED,
     ["on 2 nodes x 4 GPUs needs a cache every node can mount"]),
    ({"gpu": {"nodes": 2}, "cache": {"accessMode": "ReadWriteOncePod"}},
     Reason.CACHE_NOT_SHARED, ["cache.accessMode is ReadWriteOncePod"]),
    ({"engine": "transformers", "gpu": {"memoryGiB": 40}, "cache": SHARED},
     Reason.ENGINE_NOT_MULTI_NODE,
     ["needs 2 nodes x 8 GPUs, but transformers cannot serve one replica across nodes; "
      "engines that can: vllm, sglang (spec.engine)"]),
    ({"gpu": {"nodes": 1, "memoryGiB": 40}}, Reason.NO_GPU_FITS, ["a node holds at most 8"]),
    ({"gpu": {"memoryGiB": 40}, "cache": SHARED, "autoscaling": {"maxReplicas": 2}},
     Reason.INVALID_SPEC, ["autoscaling scales replicas of one node;", "on 2 nodes x 8 GPUs"]),
    # 15 GPUs on two nodes of at most 8: no layout
    ({"gpu": {"memoryGiB": 40, "count": 15}, "cache": SHARED}, Reason.INVALID_GPU_COUNT,
     ["is not a valid tensor-parallel size"]),
    ({"gpu": {"memoryGiB": 40, "count": 24, "nodes": 2}, "cache": SHARED},
     Reason.INVALID_GPU_COUNT, ["gpu.count 24 on 2 nodes of at most 8 GPUs gives no layout"]),
    ({"gpu": {"memoryGiB": 10, "nodes": 2}, "cache": SHARED}, Reason.INVALID_GPU_COUNT,
     ["2 nodes of at most 8 GPUs gives no layout where the GPUs of one node are a power of "
      "two dividing the 128 attention heads"]),
]


@pytest.mark.parametrize(("spec", "reason", "says"), REFUSALS)
def test_refusals(catalog: Catalog, config: OperatorConfig, spec: Obj, reason: str,
                  says: list[str]) -> None:
    err = refusal(catalog, config, **spec)
    assert err.reason == reason, err.message
    for part in says:
        assert part in err.message, err.message


def test_leader_worker_set(catalog: Catalog, config: OperatorConfig) -> None:
    planned = plan(catalog, config, cache=SHARED, gpu={"memoryGiB": 40})
    lws = leader_worker_set(planned, None)
    assert (lws["apiVersion"], lws["kind"]) == ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    spec = lws["spec"]
    assert (spec["replicas"], spec["startupPolicy"]) == (1, "LeaderReady")
    template = spec["leaderWorkerTemplate"]
    assert (template["size"], template["restartPolicy"]) == (2, "RecreateGroupOnPodRestart")
    leader, worker = template["leaderTemplate"], template["workerTemplate"]
    # the leader is the one-node Deployment's pod, with the group flags and one pod per node
    pod = copy.deepcopy(deployment(planned, None)["spec"]["template"])
    pod["spec"]["affinity"]["podAntiAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"modeldeploy.dev/deployment": "md"}},
            "matchLabelKeys": ["leaderworkerset.sigs.k8s.io/group-key"],
            "topologyKey": "kubernetes.io/hostname"}]}
    assert leader == pod
    (lead,), (work,) = leader["spec"]["containers"], worker["spec"]["containers"]
    for container in (lead, work):
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(lead)
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(work)
    group = ["--pipeline-parallel-size", "2", "--distributed-executor-backend", "mp",
             "--nnodes", "2", "--node-rank"]
    tail = ["--master-addr", "$(LWS_LEADER_ADDRESS)"]
    assert " ".join([*group, "0", *tail]) in " ".join(lead["command"])
    assert " ".join([*group, "$(LWS_WORKER_INDEX)", *tail, "--headless"]) in \
        " ".join(work["command"])
    assert {k: v for k, v in work.items() if k not in ("command",)} == \
        {k: v for k, v in lead.items() if k not in ("command", "startupProbe",
                                                     "readinessProbe", "livenessProbe")}
    # GPUs smaller than the split needs are excluded: 528 GiB / 16 GPUs at 90 %
    terms = leader["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["37510"]


def test_sglang_group_flags(catalog: Catalog, config: OperatorConfig) -> None:
    planned = plan(catalog, config, cache=SHARED, engine="sglang", gpu={"memoryGiB": 40})
    template = leader_worker_set(planned, None)["spec"]["leaderWorkerTemplate"]
    (lead,) = template["leaderTemplate"]["spec"]["containers"]
    (work,) = template["workerTemplate"]["spec"]["containers"]
    address = ["--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000"]
    assert " ".join(["--tp-size", "16"]) in " ".join(lead["command"])
    assert " ".join(["--nnodes", "2", "--node-rank", "0", *address]) in " ".join(lead["command"])
    assert " ".join(["--nnodes", "2", "--node-rank", "$(LWS_WORKER_INDEX)", *address]) in \
        " ".join(work["command"])


def test_render_and_the_service_select_the_leaders(catalog: Catalog,
                                                   config: OperatorConfig) -> None:
    planned = plan(catalog, config, cache=SHARED, gpu={"memoryGiB": 40})
    objects = {o["kind"]: o for o in render(planned, cache_complete=True)}
    assert set(objects) == {"PersistentVolumeClaim", "LeaderWorkerSet", "Service"}
    assert objects["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert objects["Service"]["spec"]["selector"] == {
        "modeldeploy.dev/deployment": "md", "leaderworkerset.sigs.k8s.io/worker-index": "0"}
    for obj in objects.values():
        if obj["kind"] != "LeaderWorkerSet":  # a CRD: the API server checks it (e2e)
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    pod = objects["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, KUBERNETES_VERSION,
                                 strict=True)


# ---------------------------------------------------------------------------------------------
# decide


def body(status: Obj | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": "md", "namespace": "llm", "uid": "uid-md",
                             "generation": 1}}
    if status is not None:
        obj["status"] = status
    return obj


def live(obj: Obj, **status: Any) -> Obj:
    got = copy.deepcopy(obj)
    got["metadata"] |= {"uid": "x", "resourceVersion": "1"}
    if status:
        got["status"] = status
    return got


@pytest.fixture
def group(catalog: Catalog, config: OperatorConfig) -> Plan:
    return plan(catalog, config, cache=SHARED, gpu={"memoryGiB": 40})


def cached(planned: Plan, **snap: Any) -> Snapshot:
    claim = live(wanted_claim(planned, Owners.of(ME, [ME]), True, None), phase="Bound")
    return Snapshot(claim=claim, **snap)


def pod(index: str, ready: bool = True, unschedulable: str | None = None) -> Obj:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": unschedulable}]
    return {"metadata": {"name": f"md-0-{index}" if index != "0" else "md-0",
                         "labels": {"modeldeploy.dev/deployment": "md",
                                    "leaderworkerset.sigs.k8s.io/worker-index": index}},
            "spec": {}, "status": {"conditions": conditions}}


def test_a_complete_cache_applies_the_leader_worker_set(group: Plan) -> None:
    decision = decide(body(), group, cached(group), [ME], NOW)
    applied = [a.obj["kind"] for a in decision.actions if isinstance(a, Apply)]
    assert applied == ["LeaderWorkerSet", "Service"]
    assert decision.status is not None
    resolved = decision.status["resolved"]
    assert (resolved["nodesPerReplica"], resolved["gpusPerReplica"],
            resolved["tensorParallelSize"], resolved["pipelineParallelSize"],
            resolved["split"]) == (2, 16, 8, 2, "2 nodes x 8 GPUs, TP 8 x PP 2")
    (cond,) = [c for c in decision.status["conditions"] if c["type"] == "Resolved"]
    assert cond["message"].endswith(": 2 nodes x 8 GPUs, TP 8 x PP 2 per replica")


def test_a_ready_group_is_a_ready_replica(group: Plan) -> None:
    lws = live(leader_worker_set(group, OWNERS.controller), replicas=1, readyReplicas=1)
    snap = cached(group, lws=lws, pods=[pod("0"), pod("1")])
    decision = decide(body(), group, snap, [ME], NOW)
    assert [a for a in decision.actions if isinstance(a, Apply)
            and a.obj["kind"] == "LeaderWorkerSet"] == []
    assert decision.status is not None
    assert (decision.status["phase"], decision.status["readyReplicas"]) == ("Ready", 1)


def test_an_unschedulable_worker_says_the_schedulers_message(group: Plan) -> None:
    message = "0/6 nodes are available: 3 Insufficient nvidia.com/gpu."
    lws = live(leader_worker_set(group, OWNERS.controller), replicas=1, readyReplicas=0)
    snap = cached(group, lws=lws, pods=[pod("0"), pod("1", False, message)])
    decision = decide(body(), group, snap, [ME], NOW)
    assert decision.status is not None and decision.status["phase"] == "Pending"
    (available,) = [c for c in decision.status["conditions"] if c["type"] == "Available"]
    assert (available["reason"], available["message"]) == ("Unschedulable",
                                                            f"no node fits: {message}")
    assert [e.reason for e in decision.events if e.type == "Warning"] == ["Unschedulable"]


def test_without_the_crd_nothing_is_applied_and_the_status_says_what_to_install(
        group: Plan) -> None:
    decision = decide(body(), group, cached(group, lws_installed=False), [ME], NOW)
    assert [a.obj["kind"] for a in decision.actions if isinstance(a, Apply)] == ["Service"]
    assert decision.status is not None and decision.status["phase"] == "Pending"
    (available,) = [c for c in decision.status["conditions"] if c["type"] == "Available"]
    assert available["reason"] == "LeaderWorkerSetMissing"
    assert "this cluster has no leaderworkersets.leaderworkerset.x-k8s.io: install " \
        "LeaderWorkerSet (version v0.9.0 or later" in available["message"]
    assert [e.reason for e in decision.events if e.type == "Warning"] == \
        ["LeaderWorkerSetMissing"]


def test_moving_between_one_node_and_several_deletes_the_other_kind(
        catalog: Catalog, config: OperatorConfig, group: Plan) -> None:
    one = plan(catalog, config, cache=SHARED)
    old_deployment = live(deployment(one, OWNERS.controller))
    decision = decide(body(), group, cached(group, deployment=old_deployment), [ME], NOW)
    assert Delete("Deployment", "llm", "md") in decision.actions
    old_group = live(leader_worker_set(group, OWNERS.controller))
    decision = decide(body(), one, cached(one, lws=old_group), [ME], NOW)
    assert Delete("LeaderWorkerSet", "llm", "md") in decision.actions
    assert "Deployment" in [a.obj["kind"] for a in decision.actions if isinstance(a, Apply)]


def test_without_rbac_for_them_the_status_says_what_to_grant(group: Plan) -> None:
    snap = cached(group, lws_installed=False, lws_forbidden=True)
    decision = decide(body(), group, snap, [ME], NOW)
    assert [a.obj["kind"] for a in decision.actions if isinstance(a, Apply)] == ["Service"]
    assert decision.status is not None
    (available,) = [c for c in decision.status["conditions"] if c["type"] == "Available"]
    assert available["reason"] == "LeaderWorkerSetMissing"
    assert "RBAC does not let the operator manage leaderworkersets.leaderworkerset.x-k8s.io: " \
        "grant it get, list, watch, create, patch, delete on them (the chart: " \
        "rbac.leaderWorkerSets=true), then restart it" in available["message"]
