{{/* Name of the virtual Node (and prefix of every object this release creates). */}}
{{- define "vn.nodeName" -}}
{{- default .Release.Name .Values.nodeName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vn.fullname" -}}
{{- printf "vk-%s" (include "vn.nodeName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vn.labels" -}}
app.kubernetes.io/name: virtual-node
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
vk-rs.io/provider: {{ .Values.provider }}
{{- end -}}

{{- define "vn.selectorLabels" -}}
app.kubernetes.io/name: virtual-node
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vn.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vn.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "vn.shimImage" -}}
{{- default (printf "%s/node-shim:%s" .Values.image.registry (include "vn.tag" .)) .Values.image.shim -}}
{{- end -}}

{{- define "vn.providerImage" -}}
{{- default (printf "%s/provider-%s:%s" .Values.image.registry .Values.provider (include "vn.tag" .)) .Values.image.provider -}}
{{- end -}}

{{/* The provider taint's key and value: the conventional ones per provider unless set. */}}
{{- define "vn.taintKey" -}}
{{- if .Values.taint.key -}}{{ .Values.taint.key }}
{{- else if eq .Values.provider "eci" -}}alibabacloud.com/eci
{{- else -}}virtual-kubelet.io/provider
{{- end -}}
{{- end -}}

{{- define "vn.taintValue" -}}
{{- if .Values.taint.value -}}{{ .Values.taint.value }}
{{- else -}}{{ get (dict "eci" "true" "aci" "azure" "fargate" "aws") .Values.provider }}
{{- end -}}
{{- end -}}

{{- define "vn.otlpEndpoint" -}}
{{- if .Values.telemetry.otlpEndpoint -}}{{ .Values.telemetry.otlpEndpoint }}
{{- else if .Values.telemetry.jaeger.enabled -}}{{ printf "http://%s-jaeger:4317" (include "vn.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* A value as a flag argument: YAML numbers arrive as floats, so 1000000 would print as
1e+06; whole numbers print as integers. */}}
{{- define "vn.flagValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* Where the shim and the provider meet: a unix socket in a shared emptyDir. */}}
{{- define "vn.socket" -}}/var/run/vk/provider.sock{{- end -}}

{{- define "vn.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
