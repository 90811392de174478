{{/* Names and labels shared by the templates. */}}

{{- define "visionfleet.name" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "visionfleet.operatorName" -}}
{{- printf "%s-operator" (include "visionfleet.name" .) -}}
{{- end -}}

{{- define "visionfleet.poolName" -}}
{{- default (include "visionfleet.name" .) .Values.pool.name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "visionfleet.labels" -}}
app.kubernetes.io/part-of: visionfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "visionfleet.operatorSelector" -}}
app.kubernetes.io/name: visionfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Prometheus operator's CRDs are there, or the caller forces the monitoring objects. */}}
{{- define "visionfleet.monitoring" -}}
{{- if or .Values.monitoring.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true{{- end -}}
{{- end -}}
