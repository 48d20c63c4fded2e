"""The model catalog: data files, their schema, and lookups."""

from .catalog import Catalog, CatalogError, format_size, parse_size
from .loader import builtin_catalog, load_catalog
from .model import Architectures, EngineRule, Family, Source, Spec
from .xinference import Skipped

__all__ = ["Architectures", "Catalog", "CatalogError", "EngineRule", "Family", "Skipped",
           "Source", "Spec", "builtin_catalog", "format_size", "load_catalog", "parse_size"]
