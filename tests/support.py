"""Paths and constants shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The Kubernetes version rendered objects are validated against (strict schemas).
KUBERNETES_VERSION = "1.36.0"
