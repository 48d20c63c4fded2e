"""The managed-flag and managed-env checks, spelling by spelling (the same rules are checked
against the engines' real parsers in tests/contract/test_managed_flags_real.py)."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.api import ModelDeploymentSpec, PlanError, Reason
from modeldeploy.catalog import Catalog
from modeldeploy.config import OperatorConfig
from modeldeploy.plan import make_plan

V2 = {"model": "deepseek-v2-chat", "sizeInBillions": 16}


def plan_error(catalog: Catalog, config: OperatorConfig, **spec: Any) -> PlanError | None:
    try:
        make_plan("x", "ns", ModelDeploymentSpec.model_validate({**V2, **spec}), catalog, config)
    except PlanError as err:
        return err
    return None


@pytest.mark.parametrize(("engine", "args", "message"), [
    ("vllm", ["--tensor_parallel_size=8"], "may not set --tensor_parallel_size (the engine "
                                           "reads it as --tensor-parallel-size) for vllm"),
    ("vllm", ["--max_model_len=100"], "--max_model_len (the engine reads it as --max-model-len)"),
    ("vllm", ["--tensor-parallel", "4"], "(the engine reads it as --tensor-parallel-size)"),
    ("vllm", ["--tensor_par=4"], "(the engine reads it as --tensor-parallel-size)"),
    ("vllm", ["-t", "4"], "may not set -t (the engine reads it as -tp) for vllm"),
    ("vllm", ["-tp=4"], "may not set -tp for vllm: the operator sets it from spec.gpu.count"),
    ("vllm", ["--served_model_name", "y"], "from spec.servedModelName"),
    ("vllm", ["--ho", "1.2.3.4"], "(the engine reads it as --host)"),
    ("vllm", ["--max-model-len.x", "1"], "(the engine reads it as --max-model-len)"),
    ("sglang", ["--tp", "2"], "may not set --tp (the engine reads it as --tp-size) for sglang"),
    ("sglang", ["--tp=2"], "(the engine reads it as --tp-size)"),
    ("sglang", ["--tensor-parallel-size", "2"], "from spec.gpu.count"),
    ("sglang", ["--context-len", "9"], "(the engine reads it as --context-length)"),
    ("sglang", ["--model", "/x"], "from spec.model"),
    # SGLang reads no `_` spelling: --tp_size is no override there but an unknown flag, which
    # would stop the engine at start
    ("sglang", ["--tp_size", "2"], "engineArgs --tp_size is not a sglang flag (sglang would "
                                   "stop at start: unrecognized arguments); --tp-size"),
    ("sglang", ["--context_length=9"], "--context-length, which it means"),
    ("transformers", ["--quant", "4-bit"], "(the engine reads it as --quantization)"),
    ("transformers", ["--max-model", "9"], "from spec.maxModelLen"),
])
def test_spellings_that_reach_a_managed_flag_are_refused(
        catalog: Catalog, config: OperatorConfig, engine: str, args: list[str],
        message: str) -> None:
    err = plan_error(catalog, config, engine=engine, engineArgs=args)
    assert err is not None and err.reason == Reason.INVALID_ENGINE_ARGS
    assert message in err.message, err.message


@pytest.mark.parametrize(("engine", "args"), [
    ("vllm", ["--enforce-eager", "--max-num-seqs", "8", "--gpu_memory_utilization=0.8"]),
    ("vllm", ["--hf-overrides", '{"a": 1}', "--chat-template", "-", "--seed", "-1"]),
    ("sglang", ["--mem-fraction-static", "0.8", "--enable-torch-compile"]),
    ("transformers", ["--max-batch-size", "4", "--dtype", "bfloat16"]),
])
def test_other_engine_args_pass(catalog: Catalog, config: OperatorConfig, engine: str,
                                args: list[str]) -> None:
    assert plan_error(catalog, config, engine=engine, engineArgs=args) is None


@pytest.mark.parametrize("name", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HOME"])
def test_env_may_not_replace_what_the_operator_sets(catalog: Catalog, config: OperatorConfig,
                                                    name: str) -> None:
    err = plan_error(catalog, config, env=[{"name": name, "value": "0"}])
    assert err is not None and err.reason == Reason.INVALID_ENGINE_ARGS
    assert err.message.startswith(f"env may not set {name}: the operator sets it to ")


def test_env_offline_names_the_fields_to_use(catalog: Catalog, config: OperatorConfig) -> None:
    err = plan_error(catalog, config, env=[{"name": "HF_HUB_OFFLINE", "value": "0"}])
    assert err is not None
    assert "spec.hub and spec.revision" in err.message


def test_other_env_passes(catalog: Catalog, config: OperatorConfig) -> None:
    assert plan_error(catalog, config, env=[{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"},
                                            {"name": "DO_NOT_TRACK", "value": "0"}]) is None
