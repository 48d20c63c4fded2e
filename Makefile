# The two commands of the README: `make demo` (the operator at work on the embedded control plane,
# simulated GPU nodes) and `make test` (installs what the tests need, then every check; what CI
# runs, through .ci/run). Both set up what is missing first (scripts/setup.sh) and reuse it later.
PY ?= .venv/bin/python
CHECKOV ?= $(CURDIR)/.venv-checkov/bin/checkov
export CHECKOV

.PHONY: demo test setup check lint crd-check pytest crd cluster up down

demo:
	@scripts/setup.sh --demo
	@$(PY) e2e/demo.py

test:
	@scripts/setup.sh
	@$(MAKE) --no-print-directory check

setup:
	@scripts/setup.sh

# the checks alone, on an environment that is already set up
check: lint crd-check pytest

lint:
	@echo "==> ruff, mypy"
	$(PY) -m ruff check .
	$(PY) -m mypy

crd-check:
	@echo "==> the generated CRD is current (make crd chart-crd refreshes it)"
	$(PY) -m modeldeploy.cli crd | diff -u crds/modeldeploy.dev_modeldeployments.yaml -

# Every test; a skip fails the run unless its reason is allowed (conftest.py: no GPU).
pytest:
	@echo "==> pytest"
	$(PY) -m pytest $(PYTEST_ARGS)

crd:
	$(PY) -m modeldeploy.cli crd > crds/modeldeploy.dev_modeldeployments.yaml

cluster:
	e2e/cluster/build

up:
	@e2e/cluster/up

down:
	e2e/cluster/down

# ---------------------------------------------------------------------------------------------
# Images and chart. VERSION defaults to the project's version (pyproject.toml), which is also the
# chart's appVersion and the tag the chart's defaults pin.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/modeldeploy
DOCKER ?= docker
CHART := charts/modeldeploy

.PHONY: images chart-lint chart-crd

# Builds the operator, loader and Transformers engine images; skipped (exit 0) without a Docker
# engine.
images:
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
		echo "images: skipped, no Docker engine here ('$(DOCKER) info' failed)"; exit 0; fi; \
	set -ex; \
	$(DOCKER) build -f images/operator/Dockerfile -t $(REGISTRY)/operator:$(VERSION) .; \
	$(DOCKER) build -f images/loader/Dockerfile -t $(REGISTRY)/loader:$(VERSION) .; \
	$(DOCKER) build -f images/transformers/Dockerfile -t $(REGISTRY)/transformers:$(VERSION) serve; \
	$(DOCKER) build -f images/transformers/Dockerfile.vl2 -t $(REGISTRY)/transformers-vl2:$(VERSION) serve

# helm lint --strict with the default and the namespaced values. Uses `helm` from PATH, else the
# pinned one the e2e build makes.
chart-lint:
	@helm=$$(command -v helm || echo "$$(e2e/cluster/build | tail -n 1)/helm"); set -ex; \
	for values in $(CHART)/ci/*-values.yaml; do \
		"$$helm" lint --strict $(CHART) -f "$$values"; \
	done

# Refreshes the chart's copy of the generated CRD (tests/test_chart.py fails when it drifts).
chart-crd:
	$(PY) -m modeldeploy.cli crd > $(CHART)/files/crds/modeldeploy.dev_modeldeployments.yaml
