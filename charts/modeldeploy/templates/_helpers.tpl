{{/* Names and labels shared by every template. */}}

{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The operator defaults as the YAML file `modeldeploy run --config` reads. An empty
     storageClassName is left out, so the cluster's default StorageClass is used. */}}
{{- define "modeldeploy.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- if not $config.storageClassName }}
{{- $_ := unset $config "storageClassName" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- define "modeldeploy.catalogMount" -}}/etc/modeldeploy/catalog{{- end }}
{{- define "modeldeploy.configMount" -}}/etc/modeldeploy{{- end }}
