"""The model catalog: data files, their schema, and lookups."""

from .catalog import Catalog, CatalogError, format_size
from .loader import builtin_catalog, load_catalog
from .model import EngineRule, Family, Source, Spec

__all__ = ["Catalog", "CatalogError", "EngineRule", "Family", "Source", "Spec",
           "builtin_catalog", "format_size", "load_catalog"]
