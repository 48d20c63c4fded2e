{{/*
The one place that says what the operator may do. Every verb here is one the controller uses;
nothing else is granted: no wildcards, no Secrets (a download Job's pod reads the hub token
itself, through secretKeyRef), no pods/exec or pods/log, no kopf.dev peering (the operator runs
standalone).

"modeldeploy.namespacedRules": in every watched namespace (a Role per namespace, or part of the
ClusterRole in cluster-wide mode).
*/}}
{{- define "modeldeploy.namespacedRules" -}}
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# update: drift of a Deployment or a Service is repaired by an update (PUT)
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# each download Job's own identity: a ServiceAccount and a Role + RoleBinding that let its pod
# patch that one Job (the progress annotation) and nothing else (get: a create that finds the
# name taken reads what holds it)
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
# list: why a weight-cache claim is still Pending (its provisioning events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.leaderWorkerSets }}
# multi-node replicas (gpu.nodes > 1): the operator's LeaderWorkerSets
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{/* "modeldeploy.clusterRules": cluster-scoped reads the operator framework (kopf) needs in
     either mode: it discovers the CRD and watches namespaces. */}}
{{- define "modeldeploy.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* "modeldeploy.gatewayRules": the gateway (templates/gateway-rbac.yaml) watches
     ModelDeployments and EndpointSlices and sets Deployments' replicas through the scale
     subresource; it reads no Secret (its API keys are a mounted file) and writes no spec. */}}
{{- define "modeldeploy.gatewayRules" -}}
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch"]
{{- end }}

{{/* "modeldeploy.gatewayPeerRules": in the release namespace, the gateway counts its own
     replicas from its Service's EndpointSlices (the autoscaler's share of the load). */}}
{{- define "modeldeploy.gatewayPeerRules" -}}
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
{{- end }}
