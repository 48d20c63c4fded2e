# Developer shortcuts. `make test` is what CI runs (through .ci/run).
PY ?= python

.PHONY: test lint crd cluster up down

test:
	$(PY) -m pytest

lint:
	ruff check .
	mypy

crd:
	modeldeploy crd > crds/modeldeploy.dev_modeldeployments.yaml

cluster:
	e2e/cluster/build

up:
	@e2e/cluster/up

down:
	e2e/cluster/down
