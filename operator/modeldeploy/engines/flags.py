"""Engine flags as the engines' own argument parsers read them.

A user's ``engineArgs`` come after the flags the operator renders, and argparse keeps the last
value of a flag: an engine argument that reaches one of the operator's flags under any spelling
the engine's parser accepts would override it. The spellings the parsers accept:

- ``--flag value`` and ``--flag=value``;
- any unambiguous prefix of a flag (argparse's ``allow_abbrev``, on in all three engines):
  ``--tensor-parallel 4`` is ``--tensor-parallel-size 4``, SGLang's ``--tp`` is ``--tp-size``,
  and a single-dash flag's prefix too (vLLM's ``-t`` is ``-tp``);
- vLLM only: ``_`` for ``-`` in a long flag's name (``--tensor_parallel_size``), up to the first
  ``.`` (its ``--flag.key value`` form sets one key of a JSON flag).

tests/contract/ checks this model against the pinned engines' real parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FlagSyntax:
    """How one engine's parser reads a flag's spelling."""

    underscores_are_dashes: bool = False
    abbreviations: bool = True


def flag_name(arg: str) -> str | None:
    """The flag part of one argument (``--port=1`` -> ``--port``), None for a value."""
    if len(arg) < 2 or not arg.startswith("-") or arg[1].isdigit():
        return None  # a value, or a negative number
    return arg.split("=", 1)[0]


def normalise(flag: str, syntax: FlagSyntax) -> str:
    if syntax.underscores_are_dashes and flag.startswith("--"):
        name, dot, rest = flag[2:].partition(".")
        return "--" + name.replace("_", "-") + dot + rest
    return flag


def managed_flag(arg: str, managed: Mapping[str, str], syntax: FlagSyntax) -> str | None:
    """The operator's flag that ``arg`` sets in the engine's parser, if it sets one.

    Every prefix of a managed flag counts, even one the real parser finds ambiguous (it
    refuses those itself, so nothing is lost by refusing them first).
    """
    raw = flag_name(arg)
    if raw is None:
        return None
    flag = normalise(raw, syntax).split(".", 1)[0] if raw.startswith("--") else raw
    if flag in managed:
        return flag
    if syntax.abbreviations and flag not in ("-", "--"):
        for spelling in managed:
            if spelling.startswith(flag) and spelling.startswith("--") == flag.startswith("--"):
                return spelling
    return None
