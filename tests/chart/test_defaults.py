"""One source of the operator's defaults: `render` / `run` without `--config` and the chart's
ConfigMap (the real helm renders it) give the same configuration, field by field."""

from __future__ import annotations

from typing import Any

from test_chart import _config_file, helm, rendered  # noqa: F401 (fixtures)

from modeldeploy.config import DEFAULT_IMAGES, OperatorConfig, load_config

Obj = dict[str, Any]


def test_chart_defaults_are_the_operators_defaults(rendered: dict[str, list[Obj]]) -> None:  # noqa: F811
    chart = _config_file(rendered["default"])
    # The chart leaves storageClassName out when empty (the cluster's default class).
    assert set(chart) | {"storageClassName"} == set(OperatorConfig.model_fields), (
        "the chart's config values and OperatorConfig have different keys")
    built_in = load_config(None).model_dump(mode="json")
    from_chart = OperatorConfig.model_validate(chart).model_dump(mode="json")
    drift = {key: (built_in[key], from_chart[key]) for key in built_in
             if built_in[key] != from_chart[key]}
    assert not drift, (
        "charts/modeldeploy/values.yaml `config:` and operator/modeldeploy/config.py disagree "
        f"(built-in, chart): {drift}")


def test_default_images_are_pinned_releases() -> None:
    for name, image in DEFAULT_IMAGES.items():
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag not in ("latest", "main", "nightly"), (name, image)
