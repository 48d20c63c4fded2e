#!/usr/bin/env bash
# modeldeploy on a kind cluster, for people with Docker: create the cluster, build and load the
# images, install the chart, apply an example and wait for it. Not run by CI (no Docker there);
# see README.md in this folder.
#
#   e2e/kind/run.sh                 # fake GPUs: waits until the weights are cached and the
#                                   # engine Deployment exists
#   GPU=real e2e/kind/run.sh        # nodes with real NVIDIA GPUs: waits for Available
#   e2e/kind/run.sh --delete        # deletes the cluster
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-modeldeploy}
NAMESPACE=${NAMESPACE:-modeldeploy-system}
WORKLOAD_NAMESPACE=${WORKLOAD_NAMESPACE:-llm}
EXAMPLE=${EXAMPLE:-examples/deepseek-vl2-tiny.yaml}
GPU=${GPU:-fake}                 # fake | real
FAKE_GPUS=${FAKE_GPUS:-1}        # GPUs the worker advertises when GPU=fake
BUILD=${BUILD:-1}                # 1: build the images and load them into kind; 0: pull
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
REGISTRY=${REGISTRY:-ghcr.io/modeldeploy}
TIMEOUT=${TIMEOUT:-2h}

say() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is not installed" >&2; exit 1; }; }

if [ "${1:-}" = "--delete" ]; then
  need kind
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

for tool in docker kind kubectl helm; do need "$tool"; done
docker info >/dev/null 2>&1 || { echo "error: no Docker engine ('docker info' failed)" >&2; exit 1; }

name=${NAME:-$(sed -n '/^metadata:/,/^[^ ]/s/^  name: *//p' "$EXAMPLE" | head -n 1)}

say "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config e2e/kind/kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
worker=$(kubectl get nodes -l modeldeploy.dev/gpu-node=true -o jsonpath='{.items[0].metadata.name}')

if [ "$BUILD" = 1 ]; then
  images=("$REGISTRY/operator:$VERSION" "$REGISTRY/loader:$VERSION")
  if [ "$GPU" = real ]; then
    say "images $REGISTRY/*:$VERSION (operator, loader, Transformers engines)"
    make images VERSION="$VERSION" REGISTRY="$REGISTRY"
    images+=("$REGISTRY/transformers:$VERSION" "$REGISTRY/transformers-vl2:$VERSION")
  else
    say "images $REGISTRY/*:$VERSION (operator, loader; fake GPUs run no engine)"
    docker build -f images/operator/Dockerfile -t "$REGISTRY/operator:$VERSION" .
    docker build -t "$REGISTRY/loader:$VERSION" images/loader
  fi
  kind load docker-image --name "$CLUSTER" "${images[@]}"
fi

if [ "$GPU" = fake ]; then
  say "worker $worker advertises $FAKE_GPUS fake nvidia.com/gpu (nothing can run on them)"
  kubectl patch node "$worker" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$FAKE_GPUS\"}}}"
fi

say "chart into $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted
kubectl create namespace "$WORKLOAD_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install modeldeploy charts/modeldeploy --namespace "$NAMESPACE" \
  --set image.tag="$VERSION" --set config.loaderImage="$REGISTRY/loader:$VERSION" \
  --set config.images.transformers="$REGISTRY/transformers:$VERSION" \
  --set config.images.transformers-vl2="$REGISTRY/transformers-vl2:$VERSION" \
  --wait --timeout 5m

say "$EXAMPLE into $WORKLOAD_NAMESPACE (downloads the model's weights from its hub)"
kubectl apply -n "$WORKLOAD_NAMESPACE" -f "$EXAMPLE"
kubectl wait -n "$WORKLOAD_NAMESPACE" --for=condition=Resolved "modeldeployment/$name" --timeout=2m

if [ "$GPU" = real ]; then
  say "waiting for $name to be Available (download and model load; up to $TIMEOUT)"
  kubectl wait -n "$WORKLOAD_NAMESPACE" --for=condition=Available "modeldeployment/$name" \
    --timeout="$TIMEOUT"
  endpoint=$(kubectl get -n "$WORKLOAD_NAMESPACE" "modeldeployment/$name" -o jsonpath='{.status.endpoint}')
  say "serving at $endpoint (kubectl port-forward -n $WORKLOAD_NAMESPACE svc/$name 8000)"
else
  say "waiting for the weights to be cached (up to $TIMEOUT)"
  kubectl wait -n "$WORKLOAD_NAMESPACE" --for=condition=CacheReady "modeldeployment/$name" \
    --timeout="$TIMEOUT"
  kubectl wait -n "$WORKLOAD_NAMESPACE" --for=create "deployment/$name" --timeout=2m
  say "weights cached and engine Deployment created; with fake GPUs the engine cannot start"
fi
kubectl get -n "$WORKLOAD_NAMESPACE" modeldeployments,deployments,jobs,pvc,pods
