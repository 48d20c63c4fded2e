"""The operator's Transformers command line is one the server accepts.

Every spec the catalog allows on the Transformers engine is rendered by ``modeldeploy render``
(the operator's own CLI, in a subprocess), and the Deployment's container command after
``python -m modeldeploy_serve`` is handed to the server's own argument parser
(``modeldeploy_serve.config``, which imports without torch). A flag the parser rejects, or a
value it reads differently from what the operator meant, fails here instead of in a pod's
CrashLoopBackOff.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import Engine
from modeldeploy.catalog import builtin_catalog

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("modeldeploy_serve") is None:  # not installed: use the checkout
    sys.path.insert(0, str(ROOT / "serve"))

from modeldeploy_serve import config as serve_config  # noqa: E402

SERVER = ["python", "-m", "modeldeploy_serve"]
# GPUs large enough for every spec (the 405B ones do not fit the operator's default GPU); their
# count and memory do not reach the Transformers command line
ONE_GPU = {"gpu": {"memoryGiB": 1024}}
# spec fields that reach the engine's command line, set on a copy of every catalog spec
CUSTOM = {"servedModelName": "org/custom-name:v1", "maxModelLen": 2048,
          "gpu": {"count": 2, "memoryGiB": 1024},
          "engineArgs": ["--max-batch-size", "4", "--batch-wait-ms=5", "--dtype", "bfloat16",
                         "--bnb-skip-modules", "lm_head,kv_b_proj", "--log-level", "debug"]}


def transformers_specs() -> list[dict[str, Any]]:
    catalog = builtin_catalog()
    specs = []
    for family in sorted(catalog.families.values(), key=lambda f: f.name):
        for spec in family.specs:
            for quantization in spec.quantizations:
                if Engine.TRANSFORMERS in catalog.engines_allowed(family, spec, quantization):
                    specs.append({"model": family.name, "sizeInBillions": spec.sizeInBillions,
                                  "format": spec.format.value, "quantization": quantization,
                                  "engine": "transformers"})
    return specs


SPECS = transformers_specs()
# every spec as the catalog gives it; the custom fields on the first spec of each format and
# quantization
FIRST_OF_EACH = {(s["format"], s["quantization"]): s for s in reversed(SPECS)}
CASES = [(spec, False) for spec in SPECS] + [(spec, True) for spec in FIRST_OF_EACH.values()]


def case_id(case: tuple[dict[str, Any], bool]) -> str:
    spec, custom = case
    return (f"{spec['model']}-{spec['sizeInBillions']:g}b-{spec['format']}-"
            f"{spec['quantization']}" + ("-custom" if custom else ""))


def test_the_catalog_has_transformers_specs_of_every_format() -> None:
    formats = {(s["format"], s["quantization"]) for s in SPECS}
    assert {("pytorch", "none"), ("pytorch", "4-bit"), ("pytorch", "8-bit")} <= formats, formats


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every case's Deployment, from one ``modeldeploy render`` run over a multi-document file."""
    docs = []
    for i, (spec, custom) in enumerate(CASES):
        body = {**spec, **(CUSTOM if custom else ONE_GPU)}
        docs.append({"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
                     "metadata": {"name": f"md-{i}", "namespace": "contract"}, "spec": body})
    path = tmp_path_factory.mktemp("contract") / "transformers.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    import modeldeploy

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(modeldeploy.__file__).resolve().parents[1]),
                    env.get("PYTHONPATH", "")) if p)
    r = subprocess.run([sys.executable, "-m", "modeldeploy.cli", "render", "-f", str(path)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    out = {o["metadata"]["name"]: o for o in yaml.safe_load_all(r.stdout)
           if o and o["kind"] == "Deployment"}
    assert len(out) == len(CASES), sorted(out)
    return out


def server_parse(argv: list[str]) -> serve_config.ServeConfig:
    """The server's own parser over ``argv``; a rejected flag fails with the parser's message."""
    parser = serve_config.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _, unknown = parser.parse_known_args(argv)
            cfg = serve_config.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"the server refuses the rendered command line (exit {exc.code}):\n"
                    f"{err.getvalue()}\nargs: {argv}")
    assert not unknown, f"the server does not know {unknown}"
    return cfg


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_rendered_command_parses_in_the_server(rendered: dict[str, dict[str, Any]],
                                               index: int) -> None:
    spec, custom = CASES[index]
    name = f"md-{index}"
    pod = rendered[name]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command: list[str] = [*container["command"], *container.get("args", [])]
    assert command[:3] == SERVER, command
    cfg = server_parse(command[3:])

    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(cfg.model == m or cfg.model.startswith(m.rstrip("/") + "/") for m in mounts), \
        (cfg.model, mounts)
    assert cfg.served_model_names == ((CUSTOM["servedModelName"],) if custom else (name,))
    assert cfg.port in {p["containerPort"] for p in container["ports"]}
    assert cfg.host == "0.0.0.0"
    assert cfg.max_model_len is not None
    if custom:
        assert cfg.max_model_len == CUSTOM["maxModelLen"]
        assert (cfg.max_batch_size, cfg.batch_wait_ms, cfg.dtype) == (4, 5.0, "bfloat16")
        assert cfg.bnb_skip_modules == ("lm_head", "kv_b_proj") and cfg.log_level == "debug"
    if spec["format"] == "pytorch":  # none, 8-bit, 4-bit: the server's own names for these
        assert cfg.quantization == spec["quantization"]
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe",
                                                         "startupProbe") if p in container]
    assert probes and set(probes) <= {"/health"}, probes


def test_a_flag_the_server_does_not_know_fails_here() -> None:
    """The check above can fail: the server's parser refuses what it does not define."""
    with pytest.raises(pytest.fail.Exception, match="refuses the rendered command line"):
        server_parse(["--model", "/models/x", "--tensor-parallel-size", "2"])
