{{/* Chart name. */}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "strata.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the gateway's pods. */}}
{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Labels that select the in-chart Redis. */}}
{{- define "strata.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strata.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The port of an `ip:port` listen address. */}}
{{- define "strata.port" -}}
{{- regexReplaceAll "^.*:" (toString .) "" -}}
{{- end -}}

{{/* The gateway's data port. */}}
{{- define "strata.grpcPort" -}}
{{- include "strata.port" (.Values.config.listen | default "0.0.0.0:50051") -}}
{{- end -}}

{{/* The gateway's admin port. */}}
{{- define "strata.adminPort" -}}
{{- $admin := .Values.config.admin | default dict -}}
{{- include "strata.port" ($admin.listen | default "127.0.0.1:9901") -}}
{{- end -}}

{{/* Whole seconds (rounded up) of a config duration such as `10s`, `1m30s`, `250ms`. */}}
{{- define "strata.seconds" -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" (toString .) -1 -}}
{{- $n := regexFind "^[0-9]+" . | int -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit -}}
{{- $ms = add $ms (mul $n $scale) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* Seconds between SIGTERM and SIGKILL: drain_delay + shutdown_grace (defaults 0s and 10s) + 5 s of margin. */}}
{{- define "strata.terminationGracePeriod" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- $drain := include "strata.seconds" (.Values.config.drain_delay | default "0s") | int -}}
{{- $grace := include "strata.seconds" (.Values.config.shutdown_grace | default "10s") | int -}}
{{- add $drain $grace 5 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* The URL of the in-chart Redis. */}}
{{- define "strata.redisUrl" -}}
{{- printf "redis://%s-redis:6379" (include "strata.fullname" .) -}}
{{- end -}}

{{/* The gateway config as rendered into the ConfigMap: `.Values.config`, with the Redis from `redis.*`. */}}
{{- define "strata.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $cache := get $config "cache" | default dict -}}
{{- $l2 := get $cache "l2" | default dict -}}
{{- if .Values.redis.enabled -}}
{{- $_ := set $l2 "url" (include "strata.redisUrl" .) -}}
{{- else if .Values.redis.url -}}
{{- $_ := set $l2 "url" .Values.redis.url -}}
{{- else if .Values.redis.cluster -}}
{{- $_ := set $l2 "cluster" .Values.redis.cluster -}}
{{- end -}}
{{- if $l2 -}}
{{- $_ := set $cache "l2" $l2 -}}
{{- $_ := set $config "cache" $cache -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
