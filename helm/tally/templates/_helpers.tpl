{{/*
Names, labels and the pieces every workload shares.
*/}}

{{- define "tally.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-tally, or just <release> when it already contains the chart name. */}}
{{- define "tally.fullname" -}}
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

{{- define "tally.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Objects of one service: <fullname>-<service>. Call with (dict "root" $ "service" "ingest"). */}}
{{- define "tally.serviceFullname" -}}
{{- printf "%s-%s" (include "tally.fullname" .root | trunc 52 | trimSuffix "-") .service }}
{{- end }}

{{- define "tally.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tally.labels" -}}
helm.sh/chart: {{ include "tally.chart" . }}
{{ include "tally.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tally
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one service's objects. Call with (dict "root" $ "service" "ingest"). */}}
{{- define "tally.serviceLabels" -}}
{{ include "tally.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "tally.serviceSelectorLabels" -}}
{{ include "tally.selectorLabels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "tally.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tally.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The account of the hook Jobs: it must exist before the release's own objects do. */}}
{{- define "tally.hooksServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-hooks" (include "tally.serviceAccountName" . | trunc 57 | trimSuffix "-") }}
{{- else }}
{{- include "tally.serviceAccountName" . }}
{{- end }}
{{- end }}

{{- define "tally.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tally.configPath" -}}/etc/tally/tally.toml{{- end }}

{{/* DATABASE_URL from the existing Secret. */}}
{{- define "tally.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: the Secret holding the PostgreSQL URL" .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- end }}

{{/*
The pod-level settings shared by Deployments and hook Jobs. Kubernetes' service links
are off: they would inject TALLY_<SERVICE>_PORT-style variables for this release's own
Services, and the services refuse TALLY_ variables that are not configuration keys.
*/}}
{{- define "tally.podCommon" -}}
enableServiceLinks: false
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* The topics, space-separated, and subscription=topic:ack-deadline[:ordered] entries, for pubsub-setup.sh. */}}
{{- define "tally.pubsubTopics" -}}
{{- join " " .Values.pubsub.topics }}
{{- end }}

{{- define "tally.pubsubSubscriptions" -}}
{{- $pairs := list }}
{{- range .Values.pubsub.subscriptions }}
{{- /* A disabled service's subscription would only pile up messages. */}}
{{- $owner := index $.Values.services .service | default dict }}
{{- if ($owner.enabled | default false) }}
{{- $pairs = append $pairs (printf "%s=%s:%d%s" .name .topic (int (.ackDeadlineSeconds | default $.Values.pubsub.ackDeadlineSeconds)) (ternary ":ordered" "" (.ordered | default false))) }}
{{- end }}
{{- end }}
{{- join " " $pairs }}
{{- end }}

{{/*
tally.toml. grpc.listen_addr is set by TALLY_GRPC__LISTEN_ADDR on the container (it
must match the container port); database.url comes from DATABASE_URL (a Secret).
*/}}
{{- define "tally.configToml" -}}
# Rendered by the Helm chart from its values; edit the values, not this file.
[grpc]
max_message_bytes = {{ int64 .Values.config.grpcMaxMessageBytes }}
{{- with .Values.config.corsAllowedOrigins }}
cors_allowed_origins = {{ toJson . }}
{{- end }}

[database]
max_connections = {{ int64 .Values.database.maxConnections }}

[bus]
backend = "pubsub"
{{- with .Values.pubsub.projectId }}
project_id = {{ toJson . }}
{{- end }}
{{- with .Values.pubsub.emulatorHost }}
emulator_host = {{ toJson . }}
{{- end }}
max_delivery_attempts = {{ int64 .Values.pubsub.maxDeliveryAttempts }}
name_prefix = {{ toJson .Values.pubsub.namePrefix }}

[telemetry]
log_format = {{ toJson .Values.config.logFormat }}
log_filter = {{ toJson .Values.config.logFilter }}
{{- with .Values.telemetry.otlpEndpoint }}
otlp_endpoint = {{ toJson . }}
{{- end }}
metrics_interval_seconds = {{ int64 .Values.telemetry.metricsIntervalSeconds }}

[auth]
enabled = true
refresh_interval_seconds = {{ int64 .Values.config.authRefreshIntervalSeconds }}

[clock]
mode = "system"

[shutdown]
grace_period_seconds = {{ int64 .Values.config.shutdownGracePeriodSeconds }}

[peers]
ingest_url = "http://{{ include "tally.serviceFullname" (dict "root" . "service" "ingest") }}:{{ .Values.grpc.port }}"
rating_url = "http://{{ include "tally.serviceFullname" (dict "root" . "service" "rating") }}:{{ .Values.grpc.port }}"
invoicing_url = "http://{{ include "tally.serviceFullname" (dict "root" . "service" "invoicing") }}:{{ .Values.grpc.port }}"
{{- with .Values.config.ingest }}

[ingest]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- with .Values.config.rating }}

[rating]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- with .Values.config.invoicing }}

[invoicing]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- with .Values.config.export }}

[export]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod identity for telemetry: OTEL_RESOURCE_ATTRIBUTES is read by the OpenTelemetry SDK. */}}
{{- define "tally.telemetryEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" (printf "service.version=%s" (default .Chart.AppVersion .Values.image.tag)) }}
{{- range $key, $value := .Values.telemetry.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key (toString $value)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}

{{/*
The grpc.health.v1 name a service reports its readiness under (its first
gRPC service; the empty name is liveness).
*/}}
{{- define "tally.readinessService" -}}
{{- $names := dict "ingest" "tally.ingest.v1.IngestService" "rating" "tally.rating.v1.RatingService" "invoicing" "tally.invoicing.v1.InvoiceService" "payments" "tally.payments.v1.PaymentService" "finance" "tally.finance.v1.LedgerService" "connectors" "tally.connectors.v1.ConnectorService" "export" "tally.export.v1.ExportService" -}}
{{- required (printf "no readiness service name for service %q" .) (get $names .) | quote -}}
{{- end }}

{{/*
The Secret holding the services' peer key (TALLY_API_KEY): apiKey.existingSecret, or
the one the chart generates (templates/peer-key.yaml).
*/}}
{{- define "tally.peerKeySecretName" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else if .Values.apiKey.generate }}
{{- printf "%s-peer-key" (include "tally.fullname" .) }}
{{- else }}
{{- fail "apiKey.existingSecret is required when apiKey.generate is false: rating, invoicing and payments call their peers with that key (TALLY_API_KEY) and refuse to start without it" }}
{{- end }}
{{- end }}
