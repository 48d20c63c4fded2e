"""Catalog load time with Xinference's published LLM catalog, against a plain ``json.load``.

For the file given (Xinference's ``xinference/model/llm/llm_family.json``, about 1.4 MB, or
its older per-hub pair), measures in the same run, alternating, ``--repeat`` times each:

* floor: ``json.load`` of the same file(s), nothing else;
* builtin: ``load_catalog()`` with no file (our own YAML files only);
* catalog: ``load_catalog([file...])``, what the operator and ``modeldeploy catalog`` do at
  start: the built-in files, the import (validation, engine choice by architecture), merging.

It prints the median and best of each, the ratio catalog / floor, and what the import gave
(families listed and skipped). A benchmark, not a test: it asserts nothing about speed.

    python bench/catalog_load.py llm_family.json
    python bench/catalog_load.py llm_family.json llm_family_modelscope.json --repeat 20
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from modeldeploy.catalog import load_catalog  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="Xinference catalog JSON file(s)")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # a skipped family's warning is not what is measured

    def floor() -> None:
        for path in args.files:
            with path.open("rb") as f:
                json.load(f)

    runs: dict[str, list[float]] = {"floor": [], "builtin": [], "catalog": []}
    load_catalog(args.files)  # imports and first-use costs out of the measurement
    for _ in range(args.repeat):
        runs["floor"].append(timed(floor))
        runs["builtin"].append(timed(load_catalog))
        runs["catalog"].append(timed(lambda: load_catalog(args.files)))

    size = sum(p.stat().st_size for p in args.files)
    print(f"files: {', '.join(p.name for p in args.files)} ({size / 1e6:.2f} MB), "
          f"{args.repeat} runs each, Python {sys.version.split()[0]}")
    for name, times in runs.items():
        print(f"  {name:8s} median {statistics.median(times) * 1e3:8.1f} ms   "
              f"best {min(times) * 1e3:8.1f} ms")
    floor_ms, catalog_ms = statistics.median(runs["floor"]), statistics.median(runs["catalog"])
    builtin_ms = statistics.median(runs["builtin"])
    print(f"  ratio catalog / floor: {catalog_ms / floor_ms:.1f}x; import alone (catalog - "
          f"builtin) / floor: {(catalog_ms - builtin_ms) / floor_ms:.1f}x")
    catalog = load_catalog(args.files)
    print(f"  {len(catalog.imported)} families listed, {len(catalog.skipped)} skipped; "
          f"{len(catalog.families)} models in the catalog")
    return 0


if __name__ == "__main__":
    sys.exit(main())
