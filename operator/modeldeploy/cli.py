"""`modeldeploy run | render | crd | catalog | gateway`."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import API_VERSION, KIND
from .api import (
    ENGINE_PREFERENCE,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    NAME_RULE_MESSAGE,
    Engine,
    ModelDeploymentSpec,
    PlanError,
)
from .api.crd import crd_yaml
from .catalog import Catalog, CatalogError, Family, Spec, format_size, load_catalog
from .config import load_config
from .plan import make_plan
from .render import render

NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML for humans and kubectl: repeated dicts are written out, not anchored."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class UsageError(Exception):
    """A problem with what the user gave the command; printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":  # the operator sets up its own logging
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args))
    except (UsageError, CatalogError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PlanError as err:
        print(f"error: {err.message} ({err.reason})", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("--namespace", "-n", action="append", default=[],
                     help="watch only this namespace (repeatable; default: all namespaces)")
    run.add_argument("--config", type=Path, help="operator defaults (YAML)")
    run.add_argument("--catalog", type=Path, action="append", default=[],
                     help="extra catalog file or folder (YAML, or Xinference JSON)")
    run.add_argument("--metrics-port", type=int, default=8080,
                     help="Prometheus metrics port (0: off)")
    run.add_argument("--health-port", type=int, default=8081,
                     help="liveness endpoint port, /healthz (0: off)")
    run.add_argument("--log-level", choices=["debug", "info", "warning"], default="info",
                     help="log level (debug includes the framework's own messages)")
    run.add_argument("--resync-seconds", type=_positive, default=600.0,
                     help="re-check every ModelDeployment this often, as a safety net for "
                          "missed events (default: 600)")
    run.set_defaults(func=_run)

    rend = sub.add_parser("render", help="print the objects a ModelDeployment file becomes")
    rend.add_argument("-f", "--filename", type=Path, required=True,
                      help="ModelDeployment YAML ('-' for stdin)")
    rend.add_argument("--namespace", "-n", default=None,
                      help="namespace when the file names none (default: default)")
    rend.add_argument("--config", type=Path, help="operator defaults (YAML)")
    rend.add_argument("--catalog", type=Path, action="append", default=[], help=CATALOG_HELP)
    rend.add_argument("--cache-complete", action="store_true",
                      help="render as if the weights were already cached (no download Job)")
    rend.set_defaults(func=_render)

    crd = sub.add_parser("crd", help="print the ModelDeployment CRD")
    crd.set_defaults(func=lambda _a: print(crd_yaml(), end="") or 0)

    gateway = sub.add_parser("gateway", help="run the OpenAI gateway for every model")
    _gateway_arguments(gateway)
    gateway.set_defaults(func=_gateway)

    cat = sub.add_parser("catalog", help="list or show catalog models")
    cat.add_argument("--catalog", type=Path, action="append", default=[], help=CATALOG_HELP)
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    lst = cat_sub.add_parser("list", help="one line per model, and what was skipped")
    lst.add_argument("--all", action="store_true",
                     help="also list every skipped family with its reason")
    lst.set_defaults(func=_catalog_list)
    show = cat_sub.add_parser("show", help="one model's specs and engines")
    show.add_argument("name")
    show.set_defaults(func=_catalog_show)
    for after in (lst, show):
        # accepted after the sub-command too; a separate dest, since a sub-command's defaults
        # would overwrite what was given before it
        after.add_argument("--catalog", type=Path, action="append", default=[],
                           dest="catalog_after", help=CATALOG_HELP)
    return parser


CATALOG_HELP = ("extra catalog file or folder (YAML of ours, or Xinference's llm_family.json, "
                "also gzipped); repeatable")


def _catalog_paths(args: argparse.Namespace) -> list[Path]:
    return [*args.catalog, *getattr(args, "catalog_after", [])]


def _run(args: argparse.Namespace) -> int:
    from .runtime.run import run_operator  # the operator's dependencies load only here

    return run_operator(namespaces=args.namespace, config_path=args.config,
                        catalog_paths=args.catalog, metrics_port=args.metrics_port,
                        health_port=args.health_port, log_level=args.log_level,
                        resync_seconds=args.resync_seconds)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be more than 0")
    return number


def _gateway_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--namespace", "-n", action="append", default=[],
        help="serve the ModelDeployments of this namespace (repeatable; default: all)")
    add("--host", default="0.0.0.0", help="listen address (default: 0.0.0.0)")
    add("--port", type=int, default=8000, help="listen port (default: 8000)")
    add("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    add("--api-keys-file", type=Path,
        help="YAML file of API keys, e.g. a mounted Secret: "
             "'keys: [{name: team-a, key: ..., models: [...]}]' (default: no keys required)")
    add("--max-body-bytes", type=int, default=10 * 1024 * 1024,
        help="largest request body (default: 10 MiB)")
    add("--connect-timeout", type=float, default=5.0, help="seconds to connect to a replica")
    add("--read-timeout", type=float, default=300.0,
        help="seconds a replica may stay silent (before the first byte and between chunks)")
    add("--request-timeout", type=float, default=3600.0, help="seconds for a whole request")
    add("--scale-up-timeout", type=float, default=600.0,
        help="seconds a request waits for a replica of a model scaled to zero")
    add("--retries", type=int, default=2,
        help="other replicas tried after a connection failure before the first byte")
    add("--prefix-affinity-chars", type=int, default=0,
        help="route the same first N prompt characters to the same replica (0: off)")
    add("--affinity-max-imbalance", type=int, default=4,
        help="prefix affinity gives way once its replica has this many more in-flight "
             "requests than the least busy one")
    add("--autoscale-interval", type=float, default=1.0,
        help="seconds between autoscaler decisions")
    add("--no-autoscale", action="store_true",
        help="never scale (an HPA or KEDA sets the replicas); scale from zero stays on")
    add("--peers-service", metavar="NAMESPACE/NAME",
        help="the gateway's own Service: its ready endpoints count the gateway replicas, whose "
             "share of the load the autoscaler scales this process's in-flight count by")
    add("--address-map", action="append", default=[], metavar="FROM=TO",
        help="connect to TO (HOST:PORT) for endpoint FROM (IP:PORT or *:PORT); for tests")
    add("--static-routes", type=Path, metavar="FILE",
        help="serve the models of this YAML file ('models: [{name: N, endpoints: "
             "[HOST:PORT]}]') instead of watching a cluster (local runs, benchmarks)")
    add("--no-access-log", action="store_true", help="no JSON access log lines on stdout")
    add("--log-level", choices=["debug", "info", "warning"], default="info")


def _gateway(args: argparse.Namespace) -> int:
    from .gateway.config import (
        GatewayConfigError,
        Settings,
        load_api_keys,
        load_static_routes,
        parse_address_map,
    )

    numbers = {"--port": args.port, "--max-body-bytes": args.max_body_bytes,
               "--connect-timeout": args.connect_timeout, "--read-timeout": args.read_timeout,
               "--request-timeout": args.request_timeout,
               "--scale-up-timeout": args.scale_up_timeout,
               "--autoscale-interval": args.autoscale_interval}
    for flag, value in numbers.items():
        if value <= 0:
            raise UsageError(f"{flag} must be greater than 0, got {value}")
    for flag, value in {"--metrics-port": args.metrics_port, "--retries": args.retries,
                        "--prefix-affinity-chars": args.prefix_affinity_chars,
                        "--affinity-max-imbalance": args.affinity_max_imbalance}.items():
        if value < 0:
            raise UsageError(f"{flag} must be 0 or more, got {value}")
    try:
        settings = Settings(
            host=args.host, port=args.port, metrics_port=args.metrics_port,
            namespaces=args.namespace, body_limit=args.max_body_bytes,
            connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
            request_timeout=args.request_timeout, scale_up_timeout=args.scale_up_timeout,
            retries=args.retries, prefix_affinity_chars=args.prefix_affinity_chars,
            affinity_max_imbalance=args.affinity_max_imbalance,
            autoscale_interval=args.autoscale_interval, autoscale=not args.no_autoscale,
            api_keys_file=args.api_keys_file, address_map=parse_address_map(args.address_map),
            access_log=not args.no_access_log, static_routes=args.static_routes,
            peers_service=args.peers_service)
        if args.peers_service is not None and not re.fullmatch(
                r"[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z]([-a-z0-9]*[a-z0-9])?", args.peers_service):
            raise UsageError(f"--peers-service {args.peers_service!r}: expected NAMESPACE/NAME "
                             f"of a Service, e.g. modeldeploy-system/modeldeploy-gateway")
        # refuse bad files before listening
        if settings.api_keys_file is not None:
            load_api_keys(settings.api_keys_file)
        if settings.static_routes is not None:
            load_static_routes(settings.static_routes)
    except GatewayConfigError as err:
        raise UsageError(str(err)) from err
    from .gateway.main import run_gateway  # the gateway's dependencies load only here

    return run_gateway(settings, args.log_level)


def _read_documents(path: Path) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML: {err}") from err
    if not docs:
        raise UsageError(f"{path} holds no object")
    return docs


def _render(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    config = load_config(args.config)
    out: list[dict[str, Any]] = []
    for doc in _read_documents(args.filename):
        name, namespace, spec = _parse_model_deployment(doc, args.namespace)
        plan = make_plan(name, namespace, spec, catalog, config)
        out += render(plan, cache_complete=args.cache_complete)
    print(yaml.dump_all(out, Dumper=_NoAliasDumper, sort_keys=False, width=100), end="")
    return 0


def _parse_model_deployment(doc: Any, namespace: str | None
                            ) -> tuple[str, str, ModelDeploymentSpec]:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise UsageError(f"expected kind {KIND} ({API_VERSION}), got {kind!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise UsageError(f"expected apiVersion {API_VERSION}, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise UsageError("metadata.name is required")
    if not _is_label(name, NAME_PATTERN):
        raise UsageError(f"{name!r}: {NAME_RULE_MESSAGE}")
    namespace = meta.get("namespace") or namespace or "default"
    if not _is_label(namespace, NAMESPACE_PATTERN):
        raise UsageError(f"namespace {namespace!r} is not a DNS-1123 label (lower case letters, "
                         f"digits and '-', at most {NAME_MAX_LENGTH} characters)")
    try:
        spec = ModelDeploymentSpec.model_validate(doc.get("spec") or {})
    except ValidationError as err:
        raise UsageError(f"{name}: invalid spec:\n{_validation_lines(err)}") from err
    return name, namespace, spec


def _is_label(value: Any, pattern: str) -> bool:
    """Whole-string match, as the CRD's CEL (RE2) rule does: a trailing newline is no label."""
    return isinstance(value, str) and len(value) <= NAME_MAX_LENGTH and \
        re.fullmatch(pattern, value) is not None


def _validation_lines(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = "spec." + ".".join(str(p) for p in e["loc"]) if e["loc"] else "spec"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def _catalog_list(args: argparse.Namespace) -> int:
    catalog = load_catalog(_catalog_paths(args))
    rows: list[tuple[str, ...]] = [("MODEL", "ABILITIES", "SIZES (B)", "FORMATS", "ENGINES",
                                    "FROM")]
    for family in sorted(catalog.families.values(), key=lambda f: f.name.lower()):
        sizes = sorted({s.sizeInBillions for s in family.specs})
        formats = sorted({s.format.value for s in family.specs})
        rows.append((family.name, ",".join(family.abilities),
                     ",".join(format_size(s) for s in sizes), ",".join(formats),
                     ",".join(_all_engines(catalog, family.name)),
                     "+".join(dict.fromkeys(_short_origin(s.origin) for s in family.specs))))
    _print_table(rows)
    for line in _summary(catalog, args.all):
        print(line)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _short_origin(origin: str) -> str:
    return "built-in" if origin.startswith("built-in ") else origin


def _summary(catalog: Catalog, every: bool) -> list[str]:
    lines = [f"{len(catalog.families)} models"]
    if catalog.imported or catalog.skipped:
        total = len(catalog.imported) + len(catalog.skipped)
        lines[0] += (f"; the Xinference files given hold {total} families: "
                     f"{len(catalog.imported)} listed, {len(catalog.skipped)} skipped")
    if catalog.skipped:
        by_kind = Counter(_reason_kind(s.reason) for s in catalog.skipped)
        lines.append(f"skipped {len(catalog.skipped)} families of the files given: "
                     + "; ".join(f"{n} {kind}" for kind, n in _by_count(by_kind))
                     + ("" if every else " (--all lists them)"))
        if every:
            lines += [f"  {s.name} ({s.origin}): {s.reason}" for s in catalog.skipped]
    if catalog.dropped:
        lines.append("left out of the families listed: " + "; ".join(
            f"{what}: {n}" for what, n in _by_count(catalog.dropped)))
    return lines


def _by_count(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _reason_kind(reason: str) -> str:
    return reason.split(" (", 1)[0].split(":", 1)[0]


def _all_engines(catalog: Catalog, name: str) -> list[str]:
    family = catalog.families[name]
    found = {e.value for s in family.specs for q in s.quantizations
             for e in catalog.engines_allowed(family, s, q)}
    return [e.value for e in ENGINE_PREFERENCE if e.value in found]


def _catalog_show(args: argparse.Namespace) -> int:
    catalog = load_catalog(_catalog_paths(args))
    family = catalog.family(args.name)
    if family is None:
        skipped = [s for s in catalog.skipped if s.name == args.name]
        if skipped:
            raise UsageError(f"model {args.name!r} of {skipped[0].origin} is not offered: "
                             f"{skipped[0].reason}")
        close = catalog.close_names(args.name)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise UsageError(f"model {args.name!r} is not in the catalog{hint}")
    print(f"{family.name}: {family.description.strip()}")
    print(f"  abilities: {', '.join(family.abilities)}; languages: {', '.join(family.languages)}")
    print(f"  context length: {family.contextLength} (default max model len "
          f"{family.max_model_len}); trust remote code: {str(family.trustRemoteCode).lower()}")
    if family.architectures:
        print(f"  architectures: {', '.join(family.architectures)}")
    print(f"  from: {family.origin} (a spec listed earlier wins for the same format, size "
          f"and quantization)")
    for spec in family.specs:
        print(f"  - {spec.format.value} {format_size(spec.sizeInBillions)}B"
              + (f" (heads {spec.attentionHeads})" if spec.attentionHeads else "")
              + f"  [{spec.origin}]")
        for quantization in spec.quantizations:
            engines = [_engine_note(catalog, family, spec, e)
                       for e in catalog.engines_allowed(family, spec, quantization)]
            print(f"      {quantization}: {', '.join(engines)}")
        for hub, source in spec.sources.items():
            print(f"      {hub.value}: {source.modelId}@{source.revision}")
    return 0


def _engine_note(catalog: Catalog, family: Family, spec: Spec, engine: Engine) -> str:
    rule = catalog.engine_rule(family, spec, engine)
    if rule is None or rule.minVersion is None:
        return engine.value
    return f"{engine.value} (>= {rule.minVersion})"


if __name__ == "__main__":
    sys.exit(main())
