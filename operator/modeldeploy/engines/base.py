"""What every engine module provides, and the narrow input it gets.

An engine sees only ``EngineInput`` (where the weights are, the name to serve, parallelism,
context length, quantization, trust flag, extra args and env), never the whole plan: engines
import nothing of the planner, and adding an engine is one module here, its catalog rows and
its image default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..api import Engine, PlanError, Reason
from .flags import FlagSyntax, managed_flag

ENGINE_PORT = 8000
HOME_DIR = "/home/engine"

# What the LeaderWorkerSet controller's pod webhook sets in every container of a group; the
# kubelet expands $(NAME) in a command from the container's environment.
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
WORKER_INDEX = "$(LWS_WORKER_INDEX)"

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
    # one replica over several nodes: one pod per node, the leader (rank 0) serves the API
    nodes: int = 1
    pipeline_parallel: int = 1
    worker: bool = False  # the command of the pods that are not the leader


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
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # serves one replica across nodes; tensor parallel over every GPU of the group (else
    # within a node, with pipeline parallelism across the nodes)
    multi_node: bool = False
    tp_across_nodes: bool = False

    def command(self, given: EngineInput) -> list[str]:
        raise NotImplementedError

    def check_engine_args(self, args: Sequence[str]) -> None:
        """Refuse an argument that reaches a managed flag under any spelling the engine reads."""
        for arg in args:
            managed = managed_flag(arg, self.managed_flags, self.flag_syntax)
            if managed is None:
                self._check_misspelt(arg)
                continue
            written = arg.split("=", 1)[0]
            read_as = "" if written == managed else f" (the engine reads it as {managed})"
            raise PlanError(
                Reason.INVALID_ENGINE_ARGS,
                f"engineArgs may not set {written}{read_as} for {self.engine.value}: the "
                f"operator sets it from {self.managed_flags[managed]}")

    def _check_misspelt(self, arg: str) -> None:
        """An underscore spelling of a managed flag that this engine does not read as one
        (SGLang's ``--tp_size``) is no override, but the engine would refuse it at start."""
        if self.flag_syntax.underscores_are_dashes:
            return
        lenient = replace(self.flag_syntax, underscores_are_dashes=True)
        managed = managed_flag(arg, self.managed_flags, lenient)
        if managed is not None:
            written = arg.split("=", 1)[0]
            raise PlanError(
                Reason.INVALID_ENGINE_ARGS,
                f"engineArgs {written} is not a {self.engine.value} flag ({self.engine.value} "
                f"would stop at start: unrecognized arguments); {managed}, which it means, "
                f"is set by the operator from {self.managed_flags[managed]}")

    def check_env(self, names: Sequence[str]) -> None:
        """Refuse env entries that would replace what the operator sets in the container."""
        for name in names:
            if name in OPERATOR_ENV:
                value, why = OPERATOR_ENV[name]
                raise PlanError(
                    Reason.INVALID_ENGINE_ARGS,
                    f"env may not set {name}: the operator sets it to {value!r} ({why})")

    def env(self, given: EngineInput) -> dict[str, str]:
        return {**self.extra_env, **given.env}

    def tail_args(self, given: EngineInput) -> list[str]:
        trust = ["--trust-remote-code"] if given.trust_remote_code else []
        return [*trust, *given.args]
