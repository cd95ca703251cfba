{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "couponrush.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix: the release name, plus the chart name unless the release name already
contains it. Resource names append "-operator" to it, so it is kept to 54 characters.
*/}}
{{- define "couponrush.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the operator's objects (Deployment, Service, RBAC, ...).
*/}}
{{- define "couponrush.operator.fullname" -}}
{{- printf "%s-operator" (include "couponrush.fullname" .) }}
{{- end }}

{{/*
chart label value: name-version.
*/}}
{{- define "couponrush.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object.
*/}}
{{- define "couponrush.labels" -}}
helm.sh/chart: {{ include "couponrush.chart" . }}
{{ include "couponrush.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: couponrush
{{- end }}

{{/*
Selector labels (immutable in a Deployment: never add to them).
*/}}
{{- define "couponrush.selectorLabels" -}}
app.kubernetes.io/name: {{ include "couponrush.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of the operator's objects.
*/}}
{{- define "couponrush.operator.labels" -}}
{{ include "couponrush.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "couponrush.operator.selectorLabels" -}}
{{ include "couponrush.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "couponrush.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "couponrush.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
"repository:tag" of an image block, the tag defaulting to the chart's appVersion.
Usage: include "couponrush.image" (list .Values.operator.image .Chart.AppVersion)
*/}}
{{- define "couponrush.image" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag | toString) }}
{{- end }}
