"""The seed specs, rendered by `modeldeploy render`: every example, and every spec x
quantization x allowed engine of the DeepSeek families in the built-in catalog."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.catalog import builtin_catalog
from modeldeploy.catalog.catalog import format_size
from modeldeploy.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAMILIES = ("deepseek-v2-chat", "deepseek-vl2")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Seed:
    id: str
    resource: Obj  # the ModelDeployment rendered
    objects: tuple[Obj, ...]  # what `modeldeploy render --cache-complete` printed

    def one(self, kind: str) -> Obj:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found

    @property
    def container(self) -> Obj:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        (engine,) = [c for c in containers if c["name"] == "engine"]
        return engine

    @property
    def command(self) -> list[str]:
        return list(self.container["command"])

    @property
    def engine(self) -> str:
        command = self.command
        if command[:2] == ["vllm", "serve"]:
            return "vllm"
        if command[:3] == ["python3", "-m", "sglang.launch_server"]:
            return "sglang"
        if command[:3] == ["python", "-m", "modeldeploy_serve"]:
            return "transformers"
        raise AssertionError(f"{self.id}: no engine runs {command[:3]}")


def render_cli(resource: Obj, tmp: Path) -> list[Obj]:
    path = tmp / f"{resource['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(resource), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["render", "-f", str(path), "--cache-complete"])
    assert code == 0, f"modeldeploy render refused {resource}: {err.getvalue()}"
    return [d for d in yaml.safe_load_all(out.getvalue()) if d]


def seed_resources() -> list[tuple[str, Obj]]:
    found: list[tuple[str, Obj]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found.append((f"examples/{path.name}", yaml.safe_load(path.read_text(encoding="utf-8"))))
    catalog = builtin_catalog()
    for name in FAMILIES:
        family = catalog.family(name)
        assert family is not None, name
        for spec in family.specs:
            for quantization in spec.quantizations:
                for engine in catalog.engines_allowed(family, spec, quantization):
                    size = format_size(spec.sizeInBillions)
                    label = f"{name} {size}B {spec.format.value} {quantization} {engine.value}"
                    slug = "-".join([name, size.replace(".", "p"), quantization.lower(),
                                     engine.value]).replace("_", "-")
                    found.append((label, {
                        "apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment",
                        "metadata": {"name": slug},
                        "spec": {"model": name, "sizeInBillions": spec.sizeInBillions,
                                 "format": spec.format.value, "quantization": quantization,
                                 "engine": engine.value}}))
    return found


@cache
def seeds(tmp: Path) -> tuple[Seed, ...]:
    return tuple(Seed(id_, resource, tuple(render_cli(resource, tmp)))
                 for id_, resource in seed_resources())
