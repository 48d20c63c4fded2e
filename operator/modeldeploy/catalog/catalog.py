"""The loaded catalog: lookups by the catalog's coordinates."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..api import ENGINE_PREFERENCE, Engine, ModelFormat
from .model import EngineCapability, EngineRule, Family, Spec


class CatalogError(ValueError):
    """A catalog file is malformed or inconsistent."""


@dataclass(frozen=True)
class Catalog:
    engines: dict[Engine, EngineCapability]
    families: dict[str, Family] = field(default_factory=dict)

    @classmethod
    def build(cls, engines: dict[Engine, EngineCapability],
              families: Iterable[Family]) -> Catalog:
        catalog = cls(engines=dict(engines), families={})
        for family in families:
            catalog.families[family.name] = family
        catalog.validate()
        return catalog

    def validate(self) -> None:
        """Every quantization a spec lists must be servable by one of its engines."""
        for family in self.families.values():
            for spec in family.specs:
                for quantization in spec.quantizations:
                    if not self.engines_allowed(family, spec, quantization):
                        raise CatalogError(
                            f"{family.name} {spec.format} {spec.sizeInBillions:g}B: no engine "
                            f"serves quantization {quantization!r}")

    def family(self, name: str) -> Family | None:
        return self.families.get(name)

    def close_names(self, name: str, limit: int = 5) -> list[str]:
        names = list(self.families)
        by_case = {n.lower(): n for n in names}
        query = name.lower()
        extends = [n for n in names if n.lower().startswith(query)]
        close = difflib.get_close_matches(query, list(by_case), n=limit, cutoff=0.6)
        return list(dict.fromkeys(extends + [by_case[c] for c in close]))[:limit]

    def engine_rule(self, family: Family, spec: Spec, engine: Engine) -> EngineRule | None:
        return family.engines_for(spec).get(engine)

    def engines_allowed(self, family: Family, spec: Spec, quantization: str) -> list[Engine]:
        """Engines that serve this spec at this quantization, fastest first."""
        if quantization not in spec.quantizations:
            return []
        rules = family.engines_for(spec)
        return [e for e in ENGINE_PREFERENCE
                if e in rules and self._engine_serves(e, rules[e], spec.format, quantization)]

    def _engine_serves(self, engine: Engine, rule: EngineRule, fmt: ModelFormat,
                       quantization: str) -> bool:
        capability = self.engines.get(engine)
        if capability is None or quantization not in capability.formats.get(fmt, ()):
            return False
        return rule.quantizations is None or quantization in rule.quantizations

    def find_spec(self, family: Family, fmt: ModelFormat, size: float) -> Spec | None:
        for spec in family.specs:
            if spec.format == fmt and _same_size(spec.sizeInBillions, size):
                return spec
        return None


def _same_size(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6 * max(1.0, abs(a), abs(b))


def format_size(size: float) -> str:
    """16 -> '16', 1.8 -> '1.8' (sizes are labels, not measurements)."""
    return f"{size:g}"
