from __future__ import annotations

import pytest

from modeldeploy.catalog import Catalog, builtin_catalog
from modeldeploy.config import OperatorConfig


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return builtin_catalog()


@pytest.fixture(scope="session")
def config() -> OperatorConfig:
    return OperatorConfig()
