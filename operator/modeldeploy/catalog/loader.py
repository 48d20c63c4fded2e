"""Load the built-in catalog and any catalog files a user brings.

Order and precedence, for families of the same name:

1. the built-in files (``data/*.yaml``);
2. catalog files of our YAML format a user brings: a family there replaces the built-in one
   of its name whole (an explicit override);
3. Xinference JSON files (``.json``, or ``.json.gz``), all read together: a family already
   defined by 1 or 2 keeps its specs, which win (they carry pinned revisions, attention heads
   and engine arguments); the imported specs are added after them, so a (format, size,
   quantization) they already have stays theirs, and the imported ones fill in the rest.
   When our family names its architectures, its engines (and their arguments) serve the
   added specs; otherwise the imported family's own engines do.

Every spec records the file it came from (``catalog show`` prints it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..api import Engine
from .catalog import Catalog, CatalogError, format_size
from .model import Architectures, CatalogFile, EngineCapability, Family, Spec
from .xinference import import_xinference

DATA_DIR = Path(__file__).parent / "data"
# libyaml's safe loader where PyYAML was built with it (the built-in files parse ~10x faster)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BUILTIN = "built-in"
_YAML = (".yaml", ".yml")
log = logging.getLogger(__name__)


def load_catalog_file(path: Path) -> CatalogFile:
    """One file of our YAML format (engines, architectures and/or families)."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
        return CatalogFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as err:
        raise CatalogError(f"{path}: cannot read catalog file: {err}") from err
    except ValidationError as err:
        raise CatalogError(f"{path}: invalid catalog file:\n{err}") from err


def is_xinference_file(path: Path) -> bool:
    return path.suffix == ".json" or path.name.endswith(".json.gz")


class _Builder:
    def __init__(self) -> None:
        self.engines: dict[Engine, EngineCapability] = {}
        self.architectures: dict[Engine, Architectures] = {}
        self.known: dict[str, tuple[str, ...]] = {}
        self.families: dict[str, Family] = {}
        self.dropped: Counter[str] = Counter()

    def add_file(self, file: CatalogFile, origin: str, replace: bool) -> None:
        self.engines.update(file.engines)
        self.architectures.update(file.architectures)
        self.known.update(file.xinferenceArchitectures)
        for family in file.families:
            _check_reachable(family, origin)
            family = family.model_copy(update={
                "origin": origin,
                "specs": tuple(s.model_copy(update={"origin": origin}) for s in family.specs)})
            if family.name in self.families:
                if not replace:
                    raise CatalogError(f"{origin}: family {family.name!r} is defined twice")
                log.info("catalog file %s replaces family %s", origin, family.name)
            self.families[family.name] = family

    def add_imported(self, imported: Family) -> None:
        ours = self.families.get(imported.name)
        if ours is None:
            self.families[imported.name] = imported
            return
        # our family's engines (with their arguments) when it names its architectures
        rules = dict(ours.engines) if ours.architectures else dict(imported.engines)
        added: list[Spec] = []
        for spec in imported.specs:
            keep = tuple(q for q in spec.quantizations
                         if _first_owner(ours.specs, spec, q) is None
                         and any(self.engines[e].serves(spec.format, q)
                                 for e in rules if e in self.engines))
            if len(keep) < len(spec.quantizations):
                self.dropped["shadowed by a spec of our own catalog files"] += \
                    len(spec.quantizations) - len(keep)
            if keep and rules:
                added.append(spec.model_copy(update={"quantizations": keep, "engines": rules}))
        if added:
            log.info("Xinference catalog adds %d spec(s) to family %s of %s", len(added),
                     ours.name, ours.origin)
            self.families[ours.name] = ours.model_copy(update={"specs": ours.specs + tuple(added)})


def _first_owner(specs: Iterable[Spec], spec: Spec, quantization: str) -> Spec | None:
    for other in specs:
        if other.format == spec.format and abs(other.sizeInBillions - spec.sizeInBillions) < 1e-6 \
                and quantization.lower() in {q.lower() for q in other.quantizations}:
            return other
    return None


def _check_reachable(family: Family, origin: str) -> None:
    """In our own files a spec that no coordinates reach is a mistake, not a second choice."""
    for i, spec in enumerate(family.specs):
        earlier = family.specs[:i]
        if all(_first_owner(earlier, spec, q) is not None for q in spec.quantizations):
            raise CatalogError(
                f"{origin}: {family.name} has two specs for {spec.format.value} "
                f"{format_size(spec.sizeInBillions)}B {', '.join(spec.quantizations)}: the "
                f"second is never chosen (a spec is chosen by format, size and quantization, "
                f"the first that matches)")


def load_catalog(extra: Iterable[Path] = ()) -> Catalog:
    """The built-in catalog, then user files (YAML of ours or Xinference JSON) on top."""
    build = _Builder()
    for path in sorted(DATA_DIR.glob("*.yaml")):
        build.add_file(load_catalog_file(path), f"{BUILTIN} {path.name}", replace=False)
    paths = _expand(extra)
    for path in (p for p in paths if not is_xinference_file(p)):
        build.add_file(load_catalog_file(path), path.name, replace=True)
    report = import_xinference([p for p in paths if is_xinference_file(p)],
                               build.architectures, build.engines, build.known)
    for family in report.families:
        build.add_imported(family)
    return Catalog.build(build.engines, build.families.values(),
                         architectures=build.architectures, skipped=report.skipped,
                         dropped=build.dropped + report.dropped,
                         imported=(f.name for f in report.families))


@lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    return load_catalog()


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            # a ConfigMap volume also holds ..data and timestamped folders: files only
            out += sorted(p for p in path.iterdir()
                          if not p.name.startswith(".") and p.is_file()
                          and (p.suffix in _YAML or is_xinference_file(p)))
        elif path.exists():
            out.append(path)
        else:
            raise CatalogError(f"{path}: no such catalog file or folder")
    return out
