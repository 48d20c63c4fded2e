"""SGLang's server argument parsing (sglang.srt.server_args: ServerArgs.add_cli_args, then
ServerArgs.from_cli_args), with argparse abbreviations OFF: the rendered command line must use
full flag names (`python3 -m sglang.launch_server` itself allows abbreviations, so `--tp` would
pass there as a prefix of `--tp-size`). Runs in the sglang venv; see _common.py."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import option_map, serve

LAUNCH = ["python3", "-m", "sglang.launch_server"]


def main() -> None:
    from sglang.srt.server_args import ServerArgs

    abbreviations = os.environ.get("SGLANG_PROBE_ABBREVIATIONS") == "1"

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="sglang serve", allow_abbrev=abbreviations)
        ServerArgs.add_cli_args(parser)
        return parser

    def parse(argv: list[str]) -> Any:
        if argv[:3] != LAUNCH:
            raise ValueError(f"not an SGLang launch_server command line: {argv[:3]}")
        ns = build().parse_args(argv[3:])
        args = ServerArgs.from_cli_args(ns)
        for name, value in vars(ns).items():
            if not hasattr(args, name):
                setattr(args, name, value)
        return args

    serve(importlib.metadata.version("sglang"), option_map(build()), parse,
          ["sglang", "py.warnings"])


if __name__ == "__main__":
    main()
