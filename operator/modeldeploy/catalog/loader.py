"""Load the built-in catalog and any catalog files a user brings."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..api import Engine
from .catalog import Catalog, CatalogError
from .model import CatalogFile, EngineCapability, Family
from .xinference import load_xinference, merge_by_name

DATA_DIR = Path(__file__).parent / "data"
log = logging.getLogger(__name__)


def load_catalog_file(path: Path) -> CatalogFile:
    """One file of our YAML format (engines and/or families)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return CatalogFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as err:
        raise CatalogError(f"{path}: cannot read catalog file: {err}") from err
    except ValidationError as err:
        raise CatalogError(f"{path}: invalid catalog file:\n{err}") from err


def load_catalog(extra: Iterable[Path] = ()) -> Catalog:
    """The built-in catalog, then user files (YAML of ours or Xinference JSON) on top.

    A user family with the name of a built-in one replaces it.
    """
    engines: dict[Engine, EngineCapability] = {}
    families: dict[str, Family] = {}
    for path in sorted(DATA_DIR.glob("*.yaml")):
        _add_file(load_catalog_file(path), engines, families, replace=False, origin=path)
    paths = _expand(extra)
    for path in (p for p in paths if p.suffix != ".json"):
        _add_file(load_catalog_file(path), engines, families, replace=True, origin=path)
    xinference = [p for p in paths if p.suffix == ".json"]
    # Xinference's older form keeps one file per hub: read them all, then merge by name.
    imported = merge_by_name(f for p in xinference for f in load_xinference(p, engines))
    for family in imported:
        _add_family(family, families, replace=True, origin=Path("Xinference catalog"))
    return Catalog.build(engines, families.values())


@lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    return load_catalog()


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        elif path.exists():
            out.append(path)
        else:
            raise CatalogError(f"{path}: no such catalog file or folder")
    return out


def _add_file(file: CatalogFile, engines: dict[Engine, EngineCapability],
              families: dict[str, Family], replace: bool, origin: Path) -> None:
    engines.update(file.engines)
    for family in file.families:
        _add_family(family, families, replace, origin)


def _add_family(family: Family, families: dict[str, Family], replace: bool,
                origin: Path) -> None:
    if family.name in families:
        if not replace:
            raise CatalogError(f"{origin}: family {family.name!r} is defined twice")
        log.info("catalog file %s replaces family %s", origin.name, family.name)
    families[family.name] = family
