"""What every engine module provides: its command line, env and container settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..api import Engine
from ..errors import PlanError, Reason
from .flags import FlagSyntax, managed_flag

if TYPE_CHECKING:
    from ..plan import Plan

ENGINE_PORT = 8000
HOME_DIR = "/home/engine"

# Environment the operator sets in every engine container, and why a spec may not change it.
OPERATOR_ENV: Mapping[str, tuple[str, str]] = {
    "HF_HUB_OFFLINE": ("1", "the engine reads the weights from the cache only; spec.hub and "
                            "spec.revision choose what the download Job fetches"),
    "TRANSFORMERS_OFFLINE": ("1", "the engine reads the weights from the cache only; spec.hub "
                                  "and spec.revision choose what the download Job fetches"),
    "HF_HOME": (f"{HOME_DIR}/hf", "the engine's writable home (an emptyDir) holds it"),
    "HOME": (HOME_DIR, "the engine's writable home is an emptyDir mounted there"),
}


@dataclass(frozen=True)
class EngineModule:
    """One serving engine. Subclasses fill in ``command``."""

    engine: Engine
    tensor_parallel: bool
    # Flags the operator sets from the spec; users set them through these fields instead.
    managed_flags: Mapping[str, str]
    flag_syntax: FlagSyntax = field(default_factory=FlagSyntax)
    run_as_non_root: bool = False
    health_path: str = "/health"
    metrics_path: str = "/metrics"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def command(self, plan: Plan, model_path: str) -> list[str]:
        raise NotImplementedError

    def check_engine_args(self, args: Sequence[str]) -> None:
        """Refuse an argument that reaches a managed flag under any spelling the engine reads."""
        for arg in args:
            managed = managed_flag(arg, self.managed_flags, self.flag_syntax)
            if managed is None:
                continue
            written = arg.split("=", 1)[0]
            read_as = "" if written == managed else f" (the engine reads it as {managed})"
            raise PlanError(
                Reason.INVALID_ENGINE_ARGS,
                f"engineArgs may not set {written}{read_as} for {self.engine.value}: the "
                f"operator sets it from {self.managed_flags[managed]}")

    def check_env(self, names: Sequence[str]) -> None:
        """Refuse env entries that would replace what the operator sets in the container."""
        for name in names:
            if name in OPERATOR_ENV:
                value, why = OPERATOR_ENV[name]
                raise PlanError(
                    Reason.INVALID_ENGINE_ARGS,
                    f"env may not set {name}: the operator sets it to {value!r} ({why})")

    def env(self, plan: Plan) -> dict[str, str]:
        return {**self.extra_env, **plan.engine_rule.env}

    def tail_args(self, plan: Plan) -> list[str]:
        """Catalog default args, then the user's, so a user's later flag wins."""
        trust = ["--trust-remote-code"] if plan.trust_remote_code else []
        return [*trust, *plan.engine_rule.args, *plan.spec.engineArgs]
