"""The leader's and the worker's command lines of a multi-node replica, through the pinned
engines' own parsers.

`modeldeploy render` prints the LeaderWorkerSet of deepseek-v2-chat 236B on 40 GB GPUs (two
nodes of eight); each pod's command is expanded as the kubelet expands it, $(NAME) from the
container's environment, with the values the LeaderWorkerSet controller's pod webhook gives a
group of two (its leader's DNS name, the worker's index), then parsed by vLLM 0.32.0 and
SGLang 0.5.23.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pins import Pin
from seeds import render_cli

from conftest import probe

NAME, NAMESPACE = "v2-group", "llm"
LWS_ENV = {"LWS_LEADER_ADDRESS": f"{NAME}-0.{NAME}.{NAMESPACE}", "LWS_GROUP_SIZE": "2"}
DESTS = {
    "vllm": ["tensor_parallel_size", "pipeline_parallel_size", "nnodes", "node_rank",
             "master_addr", "headless", "distributed_executor_backend", "model"],
    "sglang": ["tp_size", "pp_size", "nnodes", "node_rank", "dist_init_addr", "model_path"],
}


def expand(arg: str, env: dict[str, str]) -> str:
    """$(NAME) as the kubelet expands it: from the container's env, `$$` for a literal `$`,
    an undefined name left as written."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  arg)


def group_commands(engine: str, tmp: Path) -> dict[str, list[str]]:
    resource = {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {"model": "deepseek-v2-chat", "sizeInBillions": 236, "engine": engine,
                         "gpu": {"memoryGiB": 40},
                         "cache": {"accessMode": "ReadWriteMany"}}}
    (lws,) = [o for o in render_cli(resource, tmp) if o["kind"] == "LeaderWorkerSet"]
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    commands = {}
    for role, index in (("leaderTemplate", "0"), ("workerTemplate", "1")):
        (container,) = template[role]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env |= {**LWS_ENV, "LWS_WORKER_INDEX": index}
        commands[role] = [expand(arg, env) for arg in container["command"]]
    return commands


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_leader_and_worker_commands_pass_the_engines_parser(
        engines: dict[str, Pin], tmp_path: Path, engine: str) -> None:
    commands = group_commands(engine, tmp_path)
    answer = probe(engine, engines, [commands["leaderTemplate"], commands["workerTemplate"]],
                   DESTS[engine])
    parsed: dict[str, dict[str, Any]] = {}
    for role, result in zip(("leader", "worker"), answer["results"], strict=True):
        where = f"{engine} {answer['version']} {role}: {commands[role + 'Template']}"
        assert result["ok"], f"the parser refused the {where}\n{result['error']}"
        assert result["warnings"] == [], f"the parser warned on the {where}"
        parsed[role] = result["values"]
    leader, worker = parsed["leader"], parsed["worker"]
    address = LWS_ENV["LWS_LEADER_ADDRESS"]
    if engine == "vllm":  # TP within a node, PP across; rank 0 serves, the other is headless
        for values in (leader, worker):
            assert (values["tensor_parallel_size"], values["pipeline_parallel_size"],
                    values["nnodes"]) == (8, 2, 2)
            assert values["master_addr"] == address
            assert values["distributed_executor_backend"] == "mp"
        assert (leader["node_rank"], leader["headless"]) == (0, False)
        assert (worker["node_rank"], worker["headless"]) == (1, True)
    else:  # TP over all sixteen GPUs
        for values in (leader, worker):
            assert (values["tp_size"], values["pp_size"], values["nnodes"]) == (16, 1, 2)
            assert values["dist_init_addr"] == f"{address}:20000"
        assert (leader["node_rank"], worker["node_rank"]) == (0, 1)
