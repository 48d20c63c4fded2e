"""Read catalog files in Xinference's own JSON format.

Two generations exist: the older flat spec (``model_id``/``model_revision``/``model_hub``
on each spec, one file per hub) and the newer ``model_src`` form (one entry per hub inside
each spec). Both become our ``Family`` rows. Xinference's engine matching lives in its code,
not in the JSON, so an imported family is offered to every engine whose capability covers
the spec's format and quantization. Formats no engine here serves (ggufv2, mlx) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..api import Engine, Hub, ModelFormat
from .catalog import CatalogError
from .model import EngineCapability, EngineRule, Family, Source, Spec

_FORMATS = {f.value: f for f in ModelFormat}
_HUBS = {h.value: h for h in Hub}


def parse_size(value: Any) -> float:
    """Xinference writes 1.8B as the string '1_8' and 16B as 16."""
    if isinstance(value, int | float):
        return float(value)
    return float(str(value).replace("_", "."))


def load_xinference(path: Path, engines: dict[Engine, EngineCapability]) -> list[Family]:
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data if isinstance(data, list) else [data]
    try:
        return [f for f in (_family(entry, engines) for entry in entries) if f is not None]
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise CatalogError(f"{path}: not a readable Xinference catalog: {err}") from err


def merge_by_name(families: Iterable[Family]) -> list[Family]:
    """The older form keeps one file per hub: the same family appears once per hub."""
    merged: dict[str, Family] = {}
    for family in families:
        if family.name in merged:
            family = _merge_sources(merged[family.name], family)
        merged[family.name] = family
    return list(merged.values())


def _merge_sources(first: Family, second: Family) -> Family:
    specs = {(s.format, s.sizeInBillions): s for s in first.specs}
    for spec in second.specs:
        key = (spec.format, spec.sizeInBillions)
        if key in specs:
            old = specs[key]
            quantizations = tuple(dict.fromkeys(old.quantizations + spec.quantizations))
            specs[key] = old.model_copy(update={"sources": {**old.sources, **spec.sources},
                                                "quantizations": quantizations})
        else:
            specs[key] = spec
    return first.model_copy(update={"specs": tuple(specs.values())})


def _family(entry: dict[str, Any], engines: dict[Engine, EngineCapability]) -> Family | None:
    name, raw_specs = entry["model_name"], entry["model_specs"]
    if "generate" not in entry.get("model_ability", []) and \
            "chat" not in entry.get("model_ability", []):
        return None
    specs = [s for s in (_spec(raw) for raw in raw_specs) if s is not None]
    if not specs:
        return None
    served = [e for e, cap in engines.items()
              if any(q in cap.formats.get(s.format, ()) for s in specs for q in s.quantizations)]
    if not served:
        return None
    return Family(
        name=name,
        description=entry.get("model_description", ""),
        abilities=tuple(entry.get("model_ability", ["chat"])),
        languages=tuple(entry.get("model_lang", ["en"])),
        contextLength=int(entry.get("context_length", 2048)),
        engines={e: EngineRule() for e in served},
        specs=tuple(_drop_unservable(specs, engines)),
    )


def _drop_unservable(specs: list[Spec], engines: dict[Engine, EngineCapability]) -> list[Spec]:
    kept = []
    for spec in specs:
        servable = tuple(q for q in spec.quantizations
                         if any(q in cap.formats.get(spec.format, ()) for cap in engines.values()))
        if servable:
            kept.append(spec.model_copy(update={"quantizations": servable}))
    return kept


def _spec(raw: dict[str, Any]) -> Spec | None:
    fmt = _FORMATS.get(raw["model_format"])
    if fmt is None:
        return None
    if "model_src" in raw:
        sources, quantizations, heads = _sources_new(raw["model_src"])
    else:
        sources, quantizations, heads = _sources_old(raw)
    if not sources:
        return None
    return Spec(format=fmt, sizeInBillions=parse_size(raw["model_size_in_billions"]),
                quantizations=quantizations, sources=sources, attentionHeads=heads)


def _sources_new(src: dict[str, Any]) -> tuple[dict[Hub, Source], tuple[str, ...], int | None]:
    sources: dict[Hub, Source] = {}
    quantizations: list[str] = []
    heads = None
    for hub_name, entry in src.items():
        hub = _HUBS.get(hub_name)
        if hub is None:
            continue
        sources[hub] = Source(modelId=entry["model_id"],
                              revision=entry.get("model_revision") or _default_revision(hub))
        quantizations += entry.get("quantizations", [])
        heads = heads or entry.get("model_metadata", {}).get("num_attention_heads")
    return sources, tuple(dict.fromkeys(quantizations)), heads


def _sources_old(raw: dict[str, Any]) -> tuple[dict[Hub, Source], tuple[str, ...], int | None]:
    hub = _HUBS.get(raw.get("model_hub", "huggingface"))
    if hub is None or "model_id" not in raw:
        return {}, (), None
    # Older entries may template the quantization into the id ("...-{quantization}").
    if "{" in raw["model_id"]:
        return {}, (), None
    source = Source(modelId=raw["model_id"],
                    revision=raw.get("model_revision") or _default_revision(hub))
    return {hub: source}, tuple(raw.get("quantizations", ["none"])), None


def _default_revision(hub: Hub) -> str:
    return "master" if hub is Hub.MODELSCOPE else "main"

