"""Read Xinference's own LLM catalog files (``xinference/model/llm/llm_family.json``) whole.

Two generations exist: the older flat spec (``model_id``/``model_revision``/``model_hub`` on
each spec, one file per hub, no ``architectures``) and the newer ``model_src`` form (one entry
per hub inside each spec). Both become our ``Family`` rows, read as Xinference reads them:

- a spec is chosen by format, size and quantization, per hub; when several specs match (a
  second checkpoint of the same size, e.g. an ``unsloth/...-bnb-4bit`` one listed as pytorch),
  the first wins, as in Xinference's ``match_llm``; the later ones are counted as shadowed;
- sizes are numbers or strings with ``_`` for the decimal point (``"0_6"`` is 0.6);
- a model id with ``{quantization}`` in it names one repository per quantization;
- formats no engine here serves (``ggufv2``, ``mlx``, ...) and hubs we do not download from
  are skipped and counted, not errors;
- the engines of a family are those whose architecture list (``01-architectures-*.yaml``)
  holds one of its ``architectures``; the flat form names none, so they come from
  ``02-xinference-architectures.yaml`` by family name;
- a family that cannot be read (a field of the wrong type) is skipped with a warning naming
  it and the reason; the rest of the file loads.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..api import ENGINE_PREFERENCE, Engine, Hub, ModelFormat
from .catalog import CatalogError
from .model import Architectures, EngineCapability, EngineRule, Family, Source, Spec

log = logging.getLogger(__name__)

_FORMATS = {f.value: f for f in ModelFormat}
_HUBS = {h.value: h for h in Hub}
# Abilities of a model that generates text (the rest of Xinference's catalog embeds, reranks,
# draws or speaks).
_TEXT_ABILITIES = {"chat", "generate"}
# The context an imported family's engines allocate unless the deployment asks for more
# (spec.maxModelLen, up to the family's context length): the GPU sizing leaves room for a
# modest KV cache, not for the 128k-512k windows the files list.
IMPORTED_MAX_MODEL_LEN = 32768

Size = int | float | str


def parse_size(value: Any) -> float:
    """Xinference writes 1.8B as the string '1_8' and 16B as 16; '1.8' is read too."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r} is not a number")
    if isinstance(value, int | float):
        size = float(value)
    else:
        try:
            size = float(str(value).strip().replace("_", "."))
        except ValueError:
            raise ValueError(f"size {value!r} is neither a number nor like '1_8'") from None
    if not size > 0:
        raise ValueError(f"size {value!r} is not positive")
    return size


# -- the file's shape, checked field by field (unknown fields are Xinference's, kept out) ------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _HubEntry(_Loose):
    model_id: str
    model_revision: str | None = None
    quantizations: tuple[str, ...] = ("none",)
    model_metadata: dict[str, Any] | None = None

    @property
    def heads(self) -> int | None:
        value = (self.model_metadata or {}).get("num_attention_heads")
        return value if isinstance(value, int) and value > 0 else None


class _RawSpec(_Loose):
    model_format: str
    model_size_in_billions: Size
    activated_size_in_billions: Size | None = None
    # the model_src form
    model_src: dict[str, _HubEntry] | None = None
    # the flat form
    model_id: str | None = None
    model_revision: str | None = None
    model_hub: str = "huggingface"
    quantizations: tuple[str, ...] | None = None

    def hubs(self) -> list[tuple[str, _HubEntry]]:
        if self.model_src is not None:
            return list(self.model_src.items())
        if self.model_id is None:
            raise ValueError("a spec has neither model_src nor model_id")
        return [(self.model_hub, _HubEntry(model_id=self.model_id,
                                           model_revision=self.model_revision,
                                           quantizations=self.quantizations or ("none",)))]


class _RawFamily(_Loose):
    model_name: str
    model_specs: tuple[_RawSpec, ...]
    model_ability: tuple[str, ...] = ()
    model_lang: tuple[str, ...] = ("en",)
    model_description: str = ""
    context_length: int = 2048
    architectures: tuple[str, ...] | None = None
    # read for their types only: the engines here take the checkpoint's own template/stops
    virtualenv: dict[str, Any] | None = None
    chat_template: str | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop: tuple[str, ...] | None = None


# -- what an import gives -------------------------------------------------------------------
@dataclass(frozen=True)
class Skipped:
    """A family of the file the catalog does not offer, and why."""

    name: str
    reason: str
    origin: str


@dataclass
class ImportReport:
    families: list[Family] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # what was left out below the family level: "format ggufv2" -> specs, "hub csghub" -> ...
    dropped: Counter[str] = field(default_factory=Counter)


def read_json(path: Path) -> Any:
    """A catalog JSON file, gzipped or not (a ConfigMap holds at most 1 MiB)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise CatalogError(f"{path}: cannot read: {err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CatalogError(f"{path}: not valid JSON: {err}") from err


def import_xinference(paths: Iterable[Path], architectures: Mapping[Engine, Architectures],
                      capabilities: Mapping[Engine, EngineCapability],
                      known_architectures: Mapping[str, tuple[str, ...]]) -> ImportReport:
    """Read Xinference files in order; entries of the same name (one per hub file) merge."""
    report = ImportReport()
    entries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in paths:
        data = read_json(path)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise CatalogError(f"{path}: not an Xinference catalog: expected a list of model "
                               f"families, got {type(data).__name__}")
        for i, entry in enumerate(data):
            name = entry.get("model_name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                _skip(report, Skipped(f"#{i}", "no model_name", path.name))
                continue
            entries.setdefault(name, []).append((path.name, entry))
    for name, parts in entries.items():
        origin = " + ".join(dict.fromkeys(o for o, _ in parts))
        try:
            family = _family(name, [e for _, e in parts], origin, architectures, capabilities,
                             known_architectures, report.dropped)
        except (ValidationError, ValueError) as err:
            _skip(report, Skipped(name, f"cannot be read: {_reason(err)}", origin))
            continue
        if isinstance(family, Skipped):
            report.skipped.append(family)
        else:
            report.families.append(family)
    return report


def _skip(report: ImportReport, skipped: Skipped) -> None:
    log.warning("Xinference catalog %s: family %s skipped: %s", skipped.origin, skipped.name,
                skipped.reason)
    report.skipped.append(skipped)


def _reason(err: ValidationError | ValueError) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        return f"{where}: {first['msg']}, got {first.get('input')!r}"[:300] + more
    return str(err)


def engines_for_architectures(names: Iterable[str],
                              architectures: Mapping[Engine, Architectures]
                              ) -> dict[Engine, EngineRule]:
    """The engines whose list holds one of these architectures, fastest first, with the image
    variant and oldest release the architecture needs there."""
    rules: dict[Engine, EngineRule] = {}
    names = list(names)
    for engine in ENGINE_PREFERENCE:
        arch = architectures.get(engine)
        run = [n for n in names if arch is not None and arch.runs(n)]
        if arch is None or not run:
            continue
        rules[engine] = EngineRule(imageVariant=arch.imageVariants.get(run[0]),
                                   minVersion=arch.minVersions.get(run[0]))
    return rules


def _family(name: str, raw_entries: list[dict[str, Any]], origin: str,
            architectures: Mapping[Engine, Architectures],
            capabilities: Mapping[Engine, EngineCapability],
            known_architectures: Mapping[str, tuple[str, ...]],
            dropped: Counter[str]) -> Family | Skipped:
    entries = [_RawFamily.model_validate(e) for e in raw_entries]
    first = entries[0]
    abilities = tuple(dict.fromkeys(a for e in entries for a in e.model_ability))
    if not _TEXT_ABILITIES & set(abilities):
        return Skipped(name, f"abilities {', '.join(abilities) or 'none'}: not a text "
                             f"generation model", origin)
    archs = first.architectures or known_architectures.get(name)
    if not archs:
        return Skipped(name, "the file names no architectures and the catalog knows none for "
                             "this family (02-xinference-architectures.yaml)", origin)
    rules = engines_for_architectures(archs, architectures)
    if not rules:
        return Skipped(name, f"no engine here runs its architectures ({', '.join(archs)}): "
                             f"none is among those of {_engine_versions(architectures)}",
                       origin)
    specs = _specs([s for e in entries for s in e.model_specs], rules, capabilities, dropped)
    if not specs:
        formats = Counter(s.model_format for e in entries for s in e.model_specs)
        return Skipped(name, "no spec an engine here serves (formats: "
                             + ", ".join(f"{f} {n}" for f, n in formats.items()) + ")", origin)
    return Family(
        name=name,
        description=first.model_description,
        abilities=abilities or ("chat",),
        languages=first.model_lang or ("en",),
        contextLength=max(128, first.context_length),
        defaultMaxModelLen=min(max(128, first.context_length), IMPORTED_MAX_MODEL_LEN),
        architectures=archs,
        engines=rules,
        specs=tuple(s.model_copy(update={"origin": origin}) for s in specs),
        origin=origin,
    )


def _engine_versions(architectures: Mapping[Engine, Architectures]) -> str:
    named = [f"{e.value} {architectures[e].version}" for e in ENGINE_PREFERENCE
             if e in architectures]
    return " or ".join(named) if len(named) < 3 else ", ".join(named[:-1]) + " or " + named[-1]


def _specs(raw_specs: list[_RawSpec], rules: Mapping[Engine, EngineRule],
           capabilities: Mapping[Engine, EngineCapability], dropped: Counter[str]) -> list[Spec]:
    """First match wins per (format, size, quantization, hub); equal sources group again."""
    slots: dict[tuple[ModelFormat, float, str], dict[Hub, tuple[str, Source, int | None]]] = {}
    for raw in raw_specs:
        fmt = _FORMATS.get(raw.model_format)
        if fmt is None:
            dropped[f"format {raw.model_format}"] += 1
            continue
        size = parse_size(raw.model_size_in_billions)
        if raw.activated_size_in_billions is not None:
            parse_size(raw.activated_size_in_billions)
        for hub_name, entry in raw.hubs():
            hub = _HUBS.get(hub_name)
            if hub is None:
                dropped[f"hub {hub_name}"] += 1
                continue
            for quantization in entry.quantizations:
                if not any(capabilities[e].serves(fmt, quantization)
                           for e in rules if e in capabilities):
                    dropped["quantization no engine of the family serves"] += 1
                    continue
                model_id = entry.model_id.replace("{quantization}", quantization)
                slot = slots.setdefault((fmt, size, quantization.lower()), {})
                if hub in slot:
                    dropped["shadowed by an earlier spec (first match wins)"] += 1
                    continue
                try:
                    source = Source(modelId=model_id, revision=entry.model_revision or (
                        "master" if hub is Hub.MODELSCOPE else "main"))
                except ValidationError:
                    dropped["model id not of the form owner/name"] += 1
                    continue
                slot[hub] = (quantization, source, entry.heads)
    grouped: dict[tuple[ModelFormat, float, tuple[tuple[Hub, Source], ...]], list[str]] = {}
    heads: dict[tuple[ModelFormat, float, tuple[tuple[Hub, Source], ...]], int | None] = {}
    for (fmt, size, _), by_hub in slots.items():
        sources = tuple(sorted(((h, s) for h, (_, s, _) in by_hub.items()), key=lambda p: p[0]))
        spelling = next(iter(by_hub.values()))[0]
        key = (fmt, size, sources)
        grouped.setdefault(key, []).append(spelling)
        heads[key] = heads.get(key) or next((n for _, _, n in by_hub.values() if n), None)
    return [Spec(format=fmt, sizeInBillions=size, quantizations=tuple(quantizations),
                 sources=dict(sources), attentionHeads=heads[(fmt, size, sources)])
            for (fmt, size, sources), quantizations in grouped.items()]
