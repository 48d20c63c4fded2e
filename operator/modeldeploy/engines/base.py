"""What every engine module provides: its command line, env and container settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..api import Engine
from ..errors import PlanError, Reason

if TYPE_CHECKING:
    from ..plan import Plan

ENGINE_PORT = 8000


@dataclass(frozen=True)
class EngineModule:
    """One serving engine. Subclasses fill in ``command``."""

    engine: Engine
    tensor_parallel: bool
    # Flags the operator sets from the spec; users set them through these fields instead.
    managed_flags: Mapping[str, str]
    run_as_non_root: bool = False
    health_path: str = "/health"
    metrics_path: str = "/metrics"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def command(self, plan: Plan, model_path: str) -> list[str]:
        raise NotImplementedError

    def check_engine_args(self, args: Sequence[str]) -> None:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in self.managed_flags:
                raise PlanError(
                    Reason.INVALID_ENGINE_ARGS,
                    f"engineArgs may not set {flag} for {self.engine.value}: the operator sets "
                    f"it from {self.managed_flags[flag]}")

    def env(self, plan: Plan) -> dict[str, str]:
        return {**self.extra_env, **plan.engine_rule.env}

    def tail_args(self, plan: Plan) -> list[str]:
        """Catalog default args, then the user's, so a user's later flag wins."""
        trust = ["--trust-remote-code"] if plan.trust_remote_code else []
        return [*trust, *plan.engine_rule.args, *plan.spec.engineArgs]
