"""The managed-flag check sees flags as each engine's real parser does.

For every flag the operator sets, every spelling that could reach it (each prefix, `_` for
`-`, `--flag=value`) is tried on the engine's own parser, with abbreviations as the engine's
launcher has them: a spelling that changes the operator's value must be refused by
`check_engine_args`, naming the flag it reaches; one the parser reads as another flag must
not be. The managed list itself is every option string of those settings in the real parser
(aliases included), so a new alias in an engine bump fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from pins import Pin
from seeds import Seed

from conftest import probe
from modeldeploy.api import Engine
from modeldeploy.engines import engine_module
from modeldeploy.engines.flags import managed_flag

ENGINES = ["vllm", "sglang", "transformers"]
# The launchers' own parsers allow abbreviations; the probes turn them back on for this.
ABBREVIATIONS_ON = {"sglang": {"SGLANG_PROBE_ABBREVIATIONS": "1"},
                    "transformers": {"SERVE_PROBE_ABBREVIATIONS": "1"}}
SENTINELS = {"tensor_parallel_size": "2", "tp_size": "2", "max_model_len": "777",
             "context_length": "777", "port": "4321", "host": "203.0.113.7",
             "served_model_name": "sentinel-name", "model": "/sentinel",
             "model_path": "/sentinel", "quantization": "8-bit",
             # a multi-node group's settings
             "pipeline_parallel_size": "2", "nnodes": "2", "node_rank": "1",
             "master_addr": "203.0.113.9", "dist_init_addr": "203.0.113.9:5000"}


def spellings(flag: str) -> set[str]:
    """Every prefix of a flag, each also with `_` for `-` (vLLM reads them alike)."""
    start = 3 if flag.startswith("--") else 2
    found: set[str] = set()
    for end in range(start, len(flag) + 1):
        prefix = flag[:end]
        found.add(prefix)
        if prefix.startswith("--"):
            found.add("--" + prefix[2:].replace("-", "_"))
    return found


def candidates(managed: dict[str, str], options: dict[str, str]) -> list[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for flag in managed:
        value = SENTINELS[options[flag]]
        for spelling in spellings(flag):
            found.add((spelling, value))
            found.add((f"{spelling}={value}",))
    return sorted(found)


@pytest.fixture(scope="session")
def base_commands(rendered: tuple[Seed, ...]) -> dict[str, list[str]]:
    return {seed.engine: seed.command for seed in reversed(rendered)}


@pytest.fixture(scope="session")
def options(engines: dict[str, Pin], base_commands: dict[str, list[str]]) -> dict[str, Any]:
    return {e: probe(e, engines, [base_commands[e]], [])["options"] for e in ENGINES}


@pytest.mark.parametrize("engine", ENGINES)
def test_managed_flags_are_every_spelling_of_their_settings(options: dict[str, Any],
                                                            engine: str) -> None:
    real: dict[str, str] = options[engine]
    managed = engine_module(Engine(engine)).managed_flags
    missing = [flag for flag in managed if flag not in real]
    assert not missing, f"{engine}'s parser has no {missing}"
    dests = {real[flag] for flag in managed}
    aliases = {opt for opt, dest in real.items() if dest in dests}
    assert aliases == set(managed), (
        f"{engine}: option strings of the managed settings {sorted(dests)} in the real parser: "
        f"{sorted(aliases)}; managed: {sorted(managed)}")


@pytest.mark.parametrize("engine", ENGINES)
def test_other_flags_pass_the_check(options: dict[str, Any], engine: str) -> None:
    module = engine_module(Engine(engine))
    real: dict[str, str] = options[engine]
    refused = [opt for opt in real if opt not in module.managed_flags
               and managed_flag(opt, module.managed_flags, module.flag_syntax) is not None]
    assert not refused, f"{engine}: real flags the check refuses: {refused}"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_spelling_the_parser_reads_as_a_managed_flag_is_refused(
        engines: dict[str, Pin], options: dict[str, Any], base_commands: dict[str, list[str]],
        engine: str) -> None:
    module = engine_module(Engine(engine))
    real: dict[str, str] = options[engine]
    managed = dict(module.managed_flags)
    dests = sorted({real[flag] for flag in managed})
    base = base_commands[engine]
    tries = candidates(managed, real)
    answer = probe(engine, engines, [base] + [base + list(t) for t in tries], dests,
                   env=ABBREVIATIONS_ON.get(engine))
    reference, *results = answer["results"]
    assert reference["ok"], reference["error"]
    overrides = 0
    for attempt, result in zip(tries, results, strict=True):
        changed = [d for d in dests if result["ok"]
                   and result["values"][d] != reference["values"][d]]
        verdict = managed_flag(attempt[0], managed, module.flag_syntax)
        if changed:
            overrides += 1
            assert verdict is not None, (
                f"{engine} {answer['version']} reads {attempt} as setting {changed}, "
                f"but the check lets it through")
            assert [real[verdict]] == changed, (attempt, verdict, changed)
        elif result["ok"]:
            assert verdict is None, (
                f"{engine} reads {attempt} as no managed flag, but the check refuses it")
    assert overrides >= len(managed), "the parser took too few of the spellings to be a test"
