"""Read the model architectures an engine runs from the engine's own source.

The catalog's ``architectures`` lists (``data/01-architectures-*.yaml``) are written by this
module from the released packages of the versions the operator's images pin, so that a new pin
is one command away::

    python -m modeldeploy.catalog.registries vllm VLLM_SRC/vllm/model_executor/models/registry.py
    python -m modeldeploy.catalog.registries sglang SGLANG_SRC/sglang/srt/models
    python -m modeldeploy.catalog.registries transformers   # the installed transformers

- vLLM: the keys of the generating tables of ``vllm/model_executor/models/registry.py``
  (``_TEXT_GENERATION_MODELS``, ``_MULTIMODAL_MODELS``, ``_TRANSFORMERS_SUPPORTED_MODELS``);
  pooling, reward, classification and draft-model tables are left out.
- SGLang: every ``EntryClass`` of ``sglang/srt/models/*.py`` (what its registry imports), by
  class name, following ``Alias = Class`` assignments.
- Transformers: the classes ``AutoModelForCausalLM`` maps to (what the engine server here loads).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

VLLM_TABLES = ("_TEXT_GENERATION_MODELS", "_MULTIMODAL_MODELS", "_TRANSFORMERS_SUPPORTED_MODELS")


def vllm_architectures(registry_source: str) -> list[str]:
    names: list[str] = []
    for node in ast.parse(registry_source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                isinstance(t, ast.Name) and t.id in VLLM_TABLES for t in node.targets):
            names += [k.value for k in node.value.keys
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    if not names:
        raise ValueError(f"no table of {', '.join(VLLM_TABLES)} found: not vLLM's registry.py")
    return sorted(set(names))


def sglang_architectures(models_dir: Path) -> list[str]:
    names: set[str] = set()
    for path in sorted(models_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {t.id: n.value.id for n in tree.body if isinstance(n, ast.Assign)
                   and isinstance(n.value, ast.Name) for t in n.targets
                   if isinstance(t, ast.Name) and t.id != "EntryClass"}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "EntryClass" for t in node.targets):
                entries = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) \
                    else [node.value]
                names |= {aliases.get(e.id, e.id) for e in entries if isinstance(e, ast.Name)}
    if not names:
        raise ValueError(f"{models_dir}: no EntryClass found: not SGLang's models folder")
    return sorted(names)


def transformers_architectures() -> list[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names |= {value} if isinstance(value, str) else set(value)
    return sorted(names)


def main(argv: list[str]) -> int:
    engine, *rest = argv
    if engine == "vllm":
        names = vllm_architectures(Path(rest[0]).read_text(encoding="utf-8"))
    elif engine == "sglang":
        names = sglang_architectures(Path(rest[0]))
    elif engine == "transformers":
        names = transformers_architectures()
    else:
        print(f"unknown engine {engine!r}; one of vllm, sglang, transformers", file=sys.stderr)
        return 2
    print("\n".join(f"      - {n}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
