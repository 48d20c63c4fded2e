"""modeldeploy: serve catalog models on Kubernetes from one small resource."""

__version__ = "0.1.0"

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"
