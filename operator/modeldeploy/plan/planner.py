"""Resolve a ModelDeployment spec against the catalog into a plan. No I/O.

The plan says everything rendering needs, with every operator default already resolved:
which weights (hub, model id, revision), which engine and image and its narrow input, how
many GPUs per replica and the tensor-parallel size, where the pods may run, and the cache
claim the weights live in. Rendering reads the plan and never the operator's configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..api import (
    Engine,
    Hub,
    ModelDeploymentSpec,
    ModelFormat,
    PlanError,
    Reason,
    RetainPolicy,
    Toleration,
)
from ..cache.naming import cache_claim_name
from ..catalog import Catalog, EngineRule, Family, Spec, format_size
from ..config import OperatorConfig
from ..engines import EngineInput, EngineModule, engine_module
from ..loader import InvalidArgument, validate_revision
from .sizing import (
    GIB,
    GpuNeed,
    cache_size_gib,
    download_bytes_per_param,
    gpu_need,
    quantity_bytes,
    serving_bytes_per_param,
    tensor_parallel_size,
    valid_tensor_parallel,
    weights_gib,
)

CACHE_MOUNT = "/models"
WEIGHTS_DIR = "weights"


@dataclass(frozen=True)
class CachePlan:
    """The weight cache and the download that fills it."""

    claim_name: str
    size: str
    storage_class: str | None
    access_mode: str
    retain: bool
    loader_image: str
    backoff_limit: int
    pod_annotations: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Placement:
    """Where serving pods may run: the operator's defaults resolved against the spec."""

    gpu_resource_name: str
    tolerations: tuple[Toleration, ...]
    node_selector: tuple[tuple[str, str], ...]
    shm_size_gib: int


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    spec: ModelDeploymentSpec
    family: Family
    catalog_spec: Spec
    engine: Engine
    engine_rule: EngineRule
    hub: Hub
    model_id: str
    revision: str
    image: str
    gpus: int
    tensor_parallel: int
    max_model_len: int
    served_model_name: str
    need: GpuNeed
    cache: CachePlan
    placement: Placement
    engine_input: EngineInput
    endpoint: str
    # a replica of more than one node is a group of pods (a LeaderWorkerSet), one per node,
    # each with `gpus` GPUs
    nodes: int = 1
    pipeline_parallel: int = 1

    @property
    def quantization(self) -> str:
        return self.spec.quantization

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def gpus_per_replica(self) -> int:
        return self.gpus * self.nodes

    @property
    def split(self) -> str:
        """How one replica is split: ``2 nodes x 8 GPUs, TP 8 x PP 2``."""
        return (f"{self.nodes} nodes x {self.gpus} GPUs, TP {self.tensor_parallel} x "
                f"PP {self.pipeline_parallel}")

    @property
    def title(self) -> str:
        return describe(self.family.name, self.spec.format, self.spec.sizeInBillions,
                        self.spec.quantization)


def describe(model: str, fmt: ModelFormat, size: float, quantization: str) -> str:
    return f"{model} {format_size(size)}B {fmt.value} {quantization}"


def make_plan(name: str, namespace: str, spec: ModelDeploymentSpec, catalog: Catalog,
              config: OperatorConfig) -> Plan:
    """Resolve the spec, or raise PlanError with a sentence a user can act on."""
    family = _family(spec, catalog)
    cat_spec = _catalog_spec(spec, family, catalog)
    spec = spec.model_copy(update={"quantization": _catalog_spelling(spec.quantization,
                                                                     cat_spec)})
    engine = _engine(spec, family, cat_spec, catalog)
    rule = catalog.engine_rule(family, cat_spec, engine)
    assert rule is not None  # _engine only returns engines the family has a rule for
    module = engine_module(engine)
    module.check_engine_args(spec.engineArgs)
    module.check_env([e.name for e in spec.env])
    hub = spec.hub
    source = cat_spec.sources.get(hub)
    if source is None:
        hubs = ", ".join(h.value for h in cat_spec.sources)
        raise PlanError(Reason.HUB_NOT_AVAILABLE,
                        f"{family.name} {format_size(cat_spec.sizeInBillions)}B is not published "
                        f"on {hub.value}; available hubs: {hubs}")
    need = gpu_need(
        weights_gib(cat_spec.parameters_b, serving_bytes_per_param(spec.quantization)),
        family.memoryHeadroom if family.memoryHeadroom is not None else config.memoryHeadroom,
        spec.gpu.memoryGiB or config.gpuMemoryGiB, config.usableGpuFraction)
    title = describe(family.name, spec.format, spec.sizeInBillions, spec.quantization)
    access_mode = (spec.cache.accessMode or config.cacheAccessMode).value
    gpus, nodes = _layout(spec, cat_spec, need, module, config, title, access_mode,
                          catalog.engines_allowed(family, cat_spec, spec.quantization))
    revision = _revision(spec, source.revision)
    image = _image(spec, engine, rule, config)
    too_old = catalog.engine_version_problem(engine, rule, image)
    if too_old:
        raise PlanError(Reason.ENGINE_TOO_OLD, f"{title}: {too_old}")
    tensor_parallel = gpus if module.tensor_parallel else 1
    pipeline_parallel = 1
    if nodes > 1:  # a node's GPUs are tensor parallel; across nodes: pipeline or tensor
        tensor_parallel, pipeline_parallel = (gpus * nodes, 1) if module.tp_across_nodes \
            else (gpus, nodes)
    max_model_len = _max_model_len(spec, family)
    served = spec.servedModelName or name
    return Plan(
        name=name, namespace=namespace, spec=spec, family=family, catalog_spec=cat_spec,
        engine=engine, engine_rule=rule, hub=hub, model_id=source.modelId, revision=revision,
        image=image,
        gpus=gpus, tensor_parallel=tensor_parallel, max_model_len=max_model_len,
        served_model_name=served, need=need,
        cache=_cache(spec, cat_spec, hub, source.modelId, revision, config),
        placement=_placement(spec, config),
        engine_input=EngineInput(
            model_path=f"{CACHE_MOUNT}/{WEIGHTS_DIR}", served_model_name=served,
            tensor_parallel=tensor_parallel, max_model_len=max_model_len,
            quantization=spec.quantization, trust_remote_code=family.trustRemoteCode,
            args=(*rule.args, *spec.engineArgs), env=dict(rule.env),
            nodes=nodes, pipeline_parallel=pipeline_parallel),
        endpoint=f"http://{name}.{namespace}.svc.{config.clusterDomain}:{spec.port}/v1",
        nodes=nodes, pipeline_parallel=pipeline_parallel,
    )


def _family(spec: ModelDeploymentSpec, catalog: Catalog) -> Family:
    family = catalog.family(spec.model)
    if family is not None:
        return family
    close = catalog.close_names(spec.model)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise PlanError(Reason.UNKNOWN_MODEL,
                    f"model {spec.model!r} is not in the catalog; {hint}"
                    f"`modeldeploy catalog list` shows all {len(catalog.families)} models")


def _catalog_spec(spec: ModelDeploymentSpec, family: Family, catalog: Catalog) -> Spec:
    found = catalog.find_spec(family, spec.format, spec.sizeInBillions, spec.quantization)
    if found is not None:
        return found
    if not catalog.find_specs(family, spec.format, spec.sizeInBillions):
        offered = ", ".join(dict.fromkeys(f"{s.format.value} {format_size(s.sizeInBillions)}B"
                                          for s in family.specs))
        raise PlanError(Reason.UNKNOWN_SPEC,
                        f"{family.name} has no {spec.format.value} spec of "
                        f"{format_size(spec.sizeInBillions)}B; available: {offered}")
    raise PlanError(Reason.UNKNOWN_QUANTIZATION,
                    f"{family.name} {format_size(spec.sizeInBillions)}B "
                    f"{spec.format.value} has no quantization {spec.quantization!r}; available: "
                    f"{', '.join(catalog.quantizations(family, spec.format, spec.sizeInBillions))}")


def _catalog_spelling(quantization: str, spec: Spec) -> str:
    """Xinference writes fp8 where the catalog writes FP8: match without case."""
    by_case = {q.lower(): q for q in spec.quantizations}
    return by_case.get(quantization.lower(), quantization)


def _engine(spec: ModelDeploymentSpec, family: Family, cat_spec: Spec,
            catalog: Catalog) -> Engine:
    allowed = catalog.engines_allowed(family, cat_spec, spec.quantization)
    if spec.engine is None:
        return allowed[0]  # the catalog guarantees one per listed quantization
    if spec.engine in allowed:
        return spec.engine
    title = describe(family.name, spec.format, spec.sizeInBillions, spec.quantization)
    raise PlanError(Reason.ENGINE_NOT_ALLOWED,
                    f"engine {spec.engine.value} cannot serve {title}; engines that can: "
                    f"{', '.join(e.value for e in allowed)}")


def _gpus(spec: ModelDeploymentSpec, cat_spec: Spec, need: GpuNeed, tensor_parallel: bool,
          config: OperatorConfig, title: str) -> int:
    heads = cat_spec.attentionHeads
    limit = config.maxGpusPerNode
    memory = f"{need.required_gib:.0f} GiB ({need.weights_gib:.0f} GiB of weights + headroom)"
    per_gpu = f"{need.usable_per_gpu_gib:.0f} GiB usable"
    if spec.gpu.count is not None:
        count = spec.gpu.count
        if count < need.minimum_gpus:
            raise PlanError(Reason.INVALID_GPU_COUNT,
                            f"gpu.count {count} is too few for {title}: it needs about {memory}, "
                            f"{count} GPU(s) give {count * need.usable_per_gpu_gib:.0f} GiB "
                            f"({per_gpu} each); it needs at least {need.minimum_gpus}")
        if tensor_parallel and not valid_tensor_parallel(count, heads):
            raise PlanError(Reason.INVALID_GPU_COUNT,
                            f"gpu.count {count} is not a valid tensor-parallel size for {title}: "
                            f"it must be a power of two{_heads_clause(heads)} "
                            f"({', '.join(map(str, _tp_sizes(heads, limit)))})")
        gpus = count
    elif tensor_parallel:
        found = tensor_parallel_size(need.minimum_gpus, heads, limit)
        if found is None:
            raise _too_big(title, need, memory, per_gpu, limit, heads)
        gpus = found
    else:
        gpus = need.minimum_gpus
    if gpus > limit:
        raise _too_big(title, need, memory, per_gpu, limit, heads)
    return gpus


def _too_big(title: str, need: GpuNeed, memory: str, per_gpu: str, limit: int,
             heads: int | None) -> PlanError:
    return PlanError(
        Reason.NO_GPU_FITS,
        f"{title} needs about {memory}: {need.minimum_gpus} GPUs at {per_gpu} each, but a "
        f"node holds at most {limit} (gpu.nodes spreads a replica over several nodes); use "
        f"GPUs with more memory (gpu.memoryGiB), a smaller or quantized spec")


# How many nodes one replica may span when the planner chooses.
MAX_NODES = 16
SHARED_CACHE_MODES = ("ReadWriteMany",)
SHARED_STORAGE = "NFS, CephFS, Amazon EFS, Google Filestore, Lustre"


def _layout(spec: ModelDeploymentSpec, cat_spec: Spec, need: GpuNeed, module: EngineModule,
            config: OperatorConfig, title: str, access_mode: str,
            allowed: list[Engine]) -> tuple[int, int]:
    """(GPUs per node, nodes) of one replica: one node whenever it fits (as before), else
    the fewest nodes that hold it (or the user's gpu.nodes)."""
    tensor_parallel = module.tensor_parallel
    asked = spec.gpu.nodes
    limit = config.maxGpusPerNode
    if asked is None or asked == 1:
        try:
            return _gpus(spec, cat_spec, need, tensor_parallel, config, title), 1
        except PlanError as err:
            if asked == 1 or err.reason != Reason.NO_GPU_FITS:
                raise
            too_big = err
    else:
        too_big = None
    gpus, nodes = _nodes(spec, cat_spec, need, module, limit, title, asked, too_big)
    layout = f"{nodes} nodes x {gpus} GPUs"
    # when the planner chose to go beyond one node, the refusal says why it had to
    before = f"{too_big.message.split(' (gpu.nodes')[0]}; " if too_big is not None else ""
    if not module.multi_node:
        able = [e.value for e in allowed if engine_module(e).multi_node]
        engines = f"engines that can: {', '.join(able)}" if able else \
            "no engine that serves it can"
        raise PlanError(Reason.ENGINE_NOT_MULTI_NODE,
                        f"{before}{title} needs {layout}, but {module.engine.value} cannot "
                        f"serve one replica across nodes; {engines} (spec.engine)")
    if access_mode not in SHARED_CACHE_MODES:
        reason = Reason.NO_GPU_FITS if too_big is not None else Reason.CACHE_NOT_SHARED
        raise PlanError(reason,
                        f"{before}{title} on {layout} needs a cache every node can mount, and "
                        f"cache.accessMode is {access_mode}: set cache.accessMode: "
                        f"ReadWriteMany with a StorageClass that offers it ({SHARED_STORAGE})")
    if spec.autoscaling is not None:
        raise PlanError(Reason.INVALID_SPEC,
                        f"autoscaling scales replicas of one node; {title} on {layout} per "
                        f"replica scales with spec.replicas: leave autoscaling out")
    return gpus, nodes


def _nodes(spec: ModelDeploymentSpec, cat_spec: Spec, need: GpuNeed, module: EngineModule,
           limit: int, title: str, asked: int | None,
           too_big: PlanError | None) -> tuple[int, int]:
    heads = cat_spec.attentionHeads

    def valid(gpus: int, nodes: int) -> bool:
        size = gpus * nodes if module.tp_across_nodes else gpus
        return not module.tensor_parallel or valid_tensor_parallel(size, heads)

    count = spec.gpu.count
    choices = [asked] if asked is not None else list(range(2, MAX_NODES + 1))
    for nodes in choices:
        if count is not None:
            if count % nodes == 0 and count // nodes <= limit and valid(count // nodes, nodes):
                return count // nodes, nodes
            continue
        for gpus in _tp_sizes(None, limit):
            if gpus * nodes >= need.minimum_gpus and valid(gpus, nodes):
                return gpus, nodes
    if too_big is not None and count is None:
        raise too_big
    memory = f"{need.required_gib:.0f} GiB ({need.weights_gib:.0f} GiB of weights + headroom)"
    what = f"gpu.count {count} on " if count is not None else ""
    where = f"{asked} nodes" if asked is not None else f"at most {MAX_NODES} nodes"
    rule = ("the GPUs of all nodes together" if module.tp_across_nodes
            else "the GPUs of one node")
    raise PlanError(Reason.INVALID_GPU_COUNT,
                    f"{title} needs about {memory}, {need.minimum_gpus} GPUs at "
                    f"{need.usable_per_gpu_gib:.0f} GiB usable each: {what}{where} of at most "
                    f"{limit} GPUs gives no layout where {rule} are a power of two"
                    f"{_heads_clause(heads)} and every node has the same number")


def _heads_clause(heads: int | None) -> str:
    return f" dividing the {heads} attention heads" if heads else ""


def _tp_sizes(heads: int | None, limit: int) -> list[int]:
    sizes, size = [], 1
    while size <= limit:
        if heads is None or heads % size == 0:
            sizes.append(size)
        size *= 2
    return sizes


def _max_model_len(spec: ModelDeploymentSpec, family: Family) -> int:
    if spec.maxModelLen is None:
        return family.max_model_len
    if spec.maxModelLen > family.contextLength:
        raise PlanError(Reason.INVALID_MAX_MODEL_LEN,
                        f"maxModelLen {spec.maxModelLen} exceeds {family.name}'s context length "
                        f"{family.contextLength}")
    return spec.maxModelLen


def _image(spec: ModelDeploymentSpec, engine: Engine, rule: EngineRule,
           config: OperatorConfig) -> str:
    if spec.image:
        return spec.image
    key = f"{engine.value}-{rule.imageVariant}" if rule.imageVariant else engine.value
    if key not in config.images:
        raise PlanError(Reason.IMAGE_NOT_CONFIGURED,
                        f"the operator has no image for {key}; set images.{key} in its "
                        f"configuration or spec.image")
    return config.images[key]


def _cache(spec: ModelDeploymentSpec, cat_spec: Spec, hub: Hub, model_id: str, revision: str,
           config: OperatorConfig) -> CachePlan:
    download = weights_gib(cat_spec.parameters_b,
                           download_bytes_per_param(spec.format, spec.quantization))
    if spec.cache.size is not None:
        _check_cache_size(spec.cache.size, download)
    return CachePlan(
        claim_name=cache_claim_name(hub, model_id, revision),
        size=spec.cache.size or f"{cache_size_gib(download, config.cacheMargin)}Gi",
        storage_class=spec.cache.storageClassName or config.storageClassName,
        access_mode=(spec.cache.accessMode or config.cacheAccessMode).value,
        retain=spec.cache.retainPolicy is RetainPolicy.RETAIN,
        loader_image=config.loaderImage,
        backoff_limit=config.downloadBackoffLimit,
        pod_annotations=tuple(sorted(config.downloadPodAnnotations.items())),
    )


# A cache this much larger than the weights is a typo (Ti for Gi), not a plan.
MAX_CACHE_OVER_WEIGHTS = 64


def _check_cache_size(size: str, weights: float) -> None:
    """The user's cache.size must hold the weights, before any byte is downloaded."""
    given = quantity_bytes(size)
    need = f"the weights are about {weights:.1f} GiB"
    if given is None:
        raise PlanError(Reason.INVALID_CACHE_SIZE,
                        f"cache.size {size!r} is not a storage quantity such as 40Gi or 500G; "
                        f"{need}")
    if given < weights * GIB:
        raise PlanError(Reason.INVALID_CACHE_SIZE,
                        f"cache.size {size} ({given / GIB:.2f} GiB) is smaller than the weights "
                        f"(about {weights:.1f} GiB); leave it out to have it sized for you, or "
                        f"give at least {math.ceil(weights * 1.1)}Gi")
    if given > max(weights, 1) * MAX_CACHE_OVER_WEIGHTS * GIB:
        raise PlanError(Reason.INVALID_CACHE_SIZE,
                        f"cache.size {size} ({given / GIB:,.0f} GiB) is more than "
                        f"{MAX_CACHE_OVER_WEIGHTS} times the weights (about {weights:.1f} GiB); "
                        f"leave it out to have it sized for you")


def _revision(spec: ModelDeploymentSpec, default: str) -> str:
    revision = spec.revision or default
    try:
        return validate_revision(revision)
    except InvalidArgument as err:
        raise PlanError(Reason.INVALID_REVISION, str(err)) from err


def _placement(spec: ModelDeploymentSpec, config: OperatorConfig) -> Placement:
    tolerations = spec.gpu.tolerations
    if tolerations is None:
        tolerations = config.gpuTolerations
    return Placement(
        gpu_resource_name=spec.gpu.resourceName or config.gpuResourceName,
        tolerations=tuple(tolerations),
        node_selector=tuple(sorted(spec.gpu.nodeSelector.items())),
        shm_size_gib=config.shmSizeGiB,
    )


def plan_for(body: dict[str, Any], catalog: Catalog, config: OperatorConfig) -> Plan:
    """The plan of a ModelDeployment object as the API server holds it."""
    meta = body["metadata"]
    try:
        spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        raise PlanError(Reason.INVALID_SPEC, f"invalid spec: {err.errors()[0]['msg']}") from err
    return make_plan(meta["name"], meta["namespace"], spec, catalog, config)
