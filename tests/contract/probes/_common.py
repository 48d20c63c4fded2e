"""Shared by the parser probes, which run inside an engine's own venv (no project imports).

Protocol: a JSON request on stdin, ``{"argvs": [[...], ...], "dests": [...]}``; a JSON answer
on stdout: ``{"version": ..., "options": {option string: dest}, "results": [...]}`` with one
result per argv: ``{"ok": bool, "error": str, "warnings": [str], "values": {dest: value}}``
(``values`` holds the requested dests, as JSON-safe reprs).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured(loggers: list[str]) -> Iterator[tuple[list[str], io.StringIO]]:
    """Warnings (warnings module and log records >= WARNING) and stderr of one parse."""
    handler = _Records()
    targets = [logging.getLogger(name) for name in loggers]
    for logger in targets:
        logger.addHandler(handler)
    stderr = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        try:
            yield handler.messages, stderr
        finally:
            handler.messages.extend(f"{w.category.__name__}: {w.message}" for w in caught)
            for logger in targets:
                logger.removeHandler(handler)


def safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def serve(version: str, options: dict[str, str],
          parse: Callable[[list[str]], Any], loggers: list[str]) -> None:
    request = json.load(sys.stdin)
    results = []
    for argv in request["argvs"]:
        with captured(loggers) as (messages, stderr):
            try:
                parsed = parse(argv)
                error = ""
            except SystemExit as exc:
                parsed, error = None, f"exit {exc.code}: {stderr.getvalue().strip()[-2000:]}"
            except Exception as exc:  # the parser's own refusal (ValueError, ...)
                parsed, error = None, f"{type(exc).__name__}: {exc}"
        values = {} if parsed is None else {
            d: safe(getattr(parsed, d, None)) for d in request.get("dests", [])}
        results.append({"ok": parsed is not None, "error": error, "warnings": messages,
                        "values": values})
    json.dump({"version": version, "options": options, "results": results}, sys.stdout)


def option_map(parser: Any) -> dict[str, str]:
    return {opt: action.dest for action in parser._actions for opt in action.option_strings}
