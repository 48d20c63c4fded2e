"""The Transformers engine server's own parser (modeldeploy_serve.config.parse_args), with
abbreviations OFF for the rendered command line. Runs with the project's Python; see
_common.py for the protocol."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import option_map, serve

LAUNCH = ["python", "-m", "modeldeploy_serve"]


def main() -> None:
    from modeldeploy_serve import __version__, config

    abbreviations = os.environ.get("SERVE_PROBE_ABBREVIATIONS") == "1"

    def build() -> Any:
        parser = config.build_parser()
        parser.allow_abbrev = abbreviations
        return parser

    def parse(argv: list[str]) -> Any:
        if argv[:3] != LAUNCH:
            raise ValueError(f"not a `python -m modeldeploy_serve` command line: {argv[:3]}")
        ns = build().parse_args(argv[3:])
        config.parse_args(argv[3:])  # the server's own reading of it, as it starts
        return ns

    serve(__version__, option_map(build()), parse, ["modeldeploy_serve", "py.warnings"])


if __name__ == "__main__":
    main()
