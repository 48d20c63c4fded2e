"""The loaded catalog: lookups by the catalog's coordinates."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..api import ENGINE_PREFERENCE, Engine, ModelFormat
from .model import Architectures, EngineCapability, EngineRule, Family, Spec

if TYPE_CHECKING:
    from .xinference import Skipped


class CatalogError(ValueError):
    """A catalog file is malformed or inconsistent."""


@dataclass(frozen=True)
class Catalog:
    engines: dict[Engine, EngineCapability]
    families: dict[str, Family] = field(default_factory=dict)
    architectures: dict[Engine, Architectures] = field(default_factory=dict)
    # what imported files held that the catalog does not offer
    skipped: tuple[Skipped, ...] = ()
    dropped: Counter[str] = field(default_factory=Counter)
    # names of the imported files' families the catalog lists
    imported: frozenset[str] = frozenset()

    @classmethod
    def build(cls, engines: dict[Engine, EngineCapability], families: Iterable[Family],
              architectures: dict[Engine, Architectures] | None = None,
              skipped: Iterable[Skipped] = (), dropped: Counter[str] | None = None,
              imported: Iterable[str] = ()) -> Catalog:
        catalog = cls(engines=dict(engines), families={},
                      architectures=dict(architectures or {}), skipped=tuple(skipped),
                      dropped=Counter(dropped or {}), imported=frozenset(imported))
        for family in families:
            catalog.families[family.name] = family
        catalog.validate()
        return catalog

    def validate(self) -> None:
        """Every quantization a spec lists must be servable by one of its engines, and an
        engine named for a family with known architectures must run one of them."""
        for family in self.families.values():
            for spec in family.specs:
                for quantization in spec.quantizations:
                    if not self.engines_allowed(family, spec, quantization):
                        raise CatalogError(
                            f"{family.name} {spec.format} {spec.sizeInBillions:g}B: no engine "
                            f"serves quantization {quantization!r}")
            if not family.architectures:
                continue
            for engine in {e for s in family.specs for e in family.engines_for(s)}:
                arch = self.architectures.get(engine)
                if arch is not None and not any(arch.runs(a) for a in family.architectures):
                    raise CatalogError(
                        f"{family.name}: engine {engine.value} {arch.version} runs none of its "
                        f"architectures ({', '.join(family.architectures)}); see {arch.source}")

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
        if quantization.lower() not in {q.lower() for q in spec.quantizations}:
            return []
        rules = family.engines_for(spec)
        return [e for e in ENGINE_PREFERENCE
                if e in rules and self._engine_serves(e, rules[e], spec.format, quantization)]

    def _engine_serves(self, engine: Engine, rule: EngineRule, fmt: ModelFormat,
                       quantization: str) -> bool:
        capability = self.engines.get(engine)
        if capability is None or not capability.serves(fmt, quantization):
            return False
        return rule.quantizations is None or \
            quantization.lower() in {q.lower() for q in rule.quantizations}

    def find_specs(self, family: Family, fmt: ModelFormat, size: float | str) -> list[Spec]:
        """The specs of this format and size, in catalog order."""
        wanted = parse_size(size)
        return [s for s in family.specs
                if s.format == fmt and _same_size(s.sizeInBillions, wanted)]

    def find_spec(self, family: Family, fmt: ModelFormat, size: float | str,
                  quantization: str | None = None) -> Spec | None:
        """The spec a deployment of these coordinates uses: the first of this format and size
        that lists the quantization (without case: fp8 is FP8), as Xinference's match_llm
        chooses. No quantization: the first of this format and size."""
        for spec in self.find_specs(family, fmt, size):
            if quantization is None or \
                    quantization.lower() in {q.lower() for q in spec.quantizations}:
                return spec
        return None

    def quantizations(self, family: Family, fmt: ModelFormat, size: float | str) -> list[str]:
        """Every quantization of this format and size, over all its specs."""
        return list(dict.fromkeys(q for s in self.find_specs(family, fmt, size)
                                  for q in s.quantizations))

    def engine_version_problem(self, engine: Engine, rule: EngineRule, image: str) -> str | None:
        """Why this image's engine is too old for the rule's minimum version, or None.

        The version is read from the image tag (``vllm/vllm-openai:v0.31.0``,
        ``lmsysorg/sglang:v0.4.4.post2-cu124``); a tag that is no version (``latest``, a
        digest) is taken to be recent.
        """
        if rule.minVersion is None:
            return None
        tag = image.rsplit("@", 1)[0].rsplit("/", 1)[-1]
        found = re.match(r"^[^:]+:v?(\d+(?:\.\d+)*(?:\.post\d+)?)", tag)
        if found is None:
            return None
        if not version_older(found.group(1), rule.minVersion):
            return None
        return (f"{engine.value} {found.group(1)} (image {image}) is older than {rule.minVersion}, "
                f"the first {engine.value} release that runs this model")


def version_older(version: str, than: str) -> bool:
    """``0.6.6 < 0.6.6.post1 < 0.7 == 0.7.0`` (releases and post-releases, as engines tag)."""
    def key(text: str) -> tuple[tuple[int, ...], int]:
        release, _, post = text.partition(".post")
        return tuple(int(p) for p in release.split(".")), int(post) if post else -1
    (a, a_post), (b, b_post) = key(version), key(than)
    width = max(len(a), len(b))
    return (a + (0,) * (width - len(a)), a_post) < (b + (0,) * (width - len(b)), b_post)


def parse_size(value: float | str) -> float:
    """16 -> 16.0; Xinference's '1_8' (and '1.8') -> 1.8."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value.strip().replace("_", "."))
    except ValueError:
        raise CatalogError(f"size {value!r} is neither a number nor like '1_8'") from None


def _same_size(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6 * max(1.0, abs(a), abs(b))


def format_size(size: float) -> str:
    """16 -> '16', 1.8 -> '1.8' (sizes are labels, not measurements)."""
    return f"{size:g}"
