"""The catalog's data model, validated when a catalog file is loaded.

A family (``deepseek-v2-chat``) has specs (format + size), each downloadable from one or
more hubs, and the engines that serve it. What an engine can do with a format in general
(``EngineCapability``) lives beside the families, so the rows stay short: the engines a
spec allows are the family's engines that support the spec's format and quantization.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..api import Engine, Hub, ModelFormat

NonEmpty = Annotated[str, Field(min_length=1)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Row):
    """Where one spec's weights live on one hub."""

    modelId: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    revision: str = Field(min_length=1, max_length=128)


class EngineRule(_Row):
    """How one engine serves a family (or one spec of it)."""

    quantizations: tuple[NonEmpty, ...] | None = Field(
        default=None, description="Restricts the engine to these quantizations.")
    args: tuple[str, ...] = Field(default=(), description="Default engine arguments.")
    env: dict[str, str] = Field(default_factory=dict)
    imageVariant: str | None = Field(
        default=None, description="Named image of the engine (operator defaults map it).")
    minVersion: str | None = Field(
        default=None, pattern=r"^[0-9]+(\.[0-9]+)*(\.post[0-9]+)?$",
        description="Oldest engine release that runs this model (e.g. 0.7.0, 0.4.4.post2).")


class Spec(_Row):
    format: ModelFormat
    sizeInBillions: float = Field(gt=0)
    parametersInBillions: float | None = Field(
        default=None, gt=0, description="Exact parameter count, when the size is a rounded "
                                        "label (DeepSeek-V2-Lite: 15.7 for 16).")
    quantizations: tuple[NonEmpty, ...] = Field(min_length=1)
    sources: dict[Hub, Source]
    attentionHeads: int | None = Field(
        default=None, ge=1, description="Attention heads; tensor parallelism must divide it.")
    engines: dict[Engine, EngineRule] | None = Field(
        default=None, description="Overrides the family's engines for this spec.")
    origin: str = Field(default="", description="The catalog file this spec was read from "
                                                "(set when loading).")

    @property
    def parameters_b(self) -> float:
        return self.parametersInBillions or self.sizeInBillions

    @model_validator(mode="after")
    def _check(self) -> Spec:
        if Hub.HUGGINGFACE not in self.sources and Hub.MODELSCOPE not in self.sources:
            raise ValueError("a spec needs at least one source")
        if len(set(self.quantizations)) != len(self.quantizations):
            raise ValueError(f"duplicate quantizations {list(self.quantizations)}")
        if self.parametersInBillions and not (
                0.5 <= self.parametersInBillions / self.sizeInBillions <= 2):
            raise ValueError(f"parametersInBillions {self.parametersInBillions} is far from "
                             f"sizeInBillions {self.sizeInBillions}")
        return self


class Family(_Row):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    description: str = ""
    abilities: tuple[NonEmpty, ...] = ("chat",)
    languages: tuple[NonEmpty, ...] = ("en",)
    contextLength: int = Field(ge=128)
    defaultMaxModelLen: int | None = Field(
        default=None, ge=128, description="Context the engines allocate by default (a GPU's KV "
                                          "cache rarely holds the full context).")
    trustRemoteCode: bool = False
    memoryHeadroom: float | None = Field(
        default=None, ge=0, le=4, description="KV cache and activations as a fraction of the "
                                              "weights (default: the operator's).")
    architectures: tuple[NonEmpty, ...] = Field(
        default=(), description="Model classes of the checkpoints' config.json; when given, "
                                "every engine listed must run one of them.")
    engines: dict[Engine, EngineRule] = Field(min_length=1)
    specs: tuple[Spec, ...] = Field(min_length=1)
    origin: str = Field(default="", description="The catalog file this family was read from "
                                                "(set when loading).")

    @property
    def max_model_len(self) -> int:
        return min(self.defaultMaxModelLen or self.contextLength, self.contextLength)

    def engines_for(self, spec: Spec) -> dict[Engine, EngineRule]:
        return dict(spec.engines) if spec.engines is not None else dict(self.engines)

    @model_validator(mode="after")
    def _check(self) -> Family:
        # Several specs may share format and size (another checkpoint, other quantizations):
        # a spec is chosen by format, size and quantization, the first that matches winning.
        if self.defaultMaxModelLen and self.defaultMaxModelLen > self.contextLength:
            raise ValueError(f"{self.name}: defaultMaxModelLen {self.defaultMaxModelLen} exceeds "
                             f"contextLength {self.contextLength}")
        return self


class EngineCapability(_Row):
    """What an engine can serve at all: quantizations per format.

    ``*`` among a format's quantizations: any label (pre-quantized checkpoints describe their
    own quantization in config.json; the label only tells the variants apart).
    """

    formats: dict[ModelFormat, tuple[NonEmpty, ...]]

    def serves(self, fmt: ModelFormat, quantization: str) -> bool:
        allowed = self.formats.get(fmt, ())
        return "*" in allowed or quantization.lower() in {q.lower() for q in allowed}


class Architectures(_Row):
    """The model architectures one engine release runs, and where the list came from."""

    version: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$")
    source: NonEmpty
    names: frozenset[NonEmpty] = Field(min_length=1)
    mapped: dict[NonEmpty, NonEmpty] = Field(
        default_factory=dict, description="Checkpoint architectures the engine maps onto one "
                                          "of its own (value: why).")
    imageVariants: dict[NonEmpty, NonEmpty] = Field(
        default_factory=dict, description="Architectures served by a named image of the engine.")
    minVersions: dict[NonEmpty, Annotated[str, Field(
        pattern=r"^[0-9]+(\.[0-9]+)*(\.post[0-9]+)?$")]] = Field(
        default_factory=dict, description="Oldest release that runs an architecture.")

    def runs(self, architecture: str) -> bool:
        return architecture in self.names or architecture in self.mapped


class CatalogFile(_Row):
    """One catalog file of our own format."""

    engines: dict[Engine, EngineCapability] = Field(default_factory=dict)
    architectures: dict[Engine, Architectures] = Field(default_factory=dict)
    xinferenceArchitectures: dict[NonEmpty, tuple[NonEmpty, ...]] = Field(
        default_factory=dict, description="Architectures of Xinference families whose file "
                                          "names none (its older form), by family name.")
    families: tuple[Family, ...] = ()
