"""The test files load as top-level modules (no packages): two files of one name in different
folders stop the whole run at collection."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_FOLDERS = ("tests", "serve/tests", "e2e")


def test_every_test_file_name_is_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for folder in TEST_FOLDERS:
        for path in (ROOT / folder).rglob("test_*.py"):
            seen[path.name].append(str(path.relative_to(ROOT)))
    assert len(seen) > 50
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, clashes
