"""What every engine module provides, and the narrow input it gets.

An engine sees only ``EngineInput`` (where the weights are, the name to serve, parallelism,
context length, quantization, trust flag, extra args and env), never the whole plan: engines
import nothing of the planner, and adding an engine is one module here, its catalog rows and
its image default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..api import Engine, PlanError, Reason

ENGINE_PORT = 8000


@dataclass(frozen=True)
class EngineInput:
    model_path: str
    served_model_name: str
    tensor_parallel: int
    max_model_len: int
    quantization: str
    trust_remote_code: bool
    # the catalog's default arguments, then the user's, so a user's later flag wins
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineModule:
    """One serving engine. Subclasses fill in ``command``."""

    engine: Engine
    tensor_parallel: bool
    # Flags the operator sets from the spec; users set them through these fields instead.
    managed_flags: Mapping[str, str]
    run_as_non_root: bool = False
    health_path: str = "/health"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def command(self, given: EngineInput) -> list[str]:
        raise NotImplementedError

    def check_engine_args(self, args: Sequence[str]) -> None:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in self.managed_flags:
                raise PlanError(
                    Reason.INVALID_ENGINE_ARGS,
                    f"engineArgs may not set {flag} for {self.engine.value}: the operator sets "
                    f"it from {self.managed_flags[flag]}")

    def env(self, given: EngineInput) -> dict[str, str]:
        return {**self.extra_env, **given.env}

    def tail_args(self, given: EngineInput) -> list[str]:
        trust = ["--trust-remote-code"] if given.trust_remote_code else []
        return [*trust, *given.args]
