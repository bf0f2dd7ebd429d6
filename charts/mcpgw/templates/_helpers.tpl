{{/* Names, labels and the values several templates derive from. */}}

{{- define "mcpgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix; suffixes such as -control-plane-grpc (18 characters) must still fit in 63. */}}
{{- define "mcpgw.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcpgw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcpgw.labels" -}}
helm.sh/chart: {{ include "mcpgw.chart" . }}
app.kubernetes.io/name: {{ include "mcpgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcpgw
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "proxy"). */}}
{{- define "mcpgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpgw.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of one component's resources: (dict "ctx" $ "component" "proxy"). */}}
{{- define "mcpgw.componentLabels" -}}
{{ include "mcpgw.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mcpgw.controlPlane.fullname" -}}
{{- printf "%s-control-plane" (include "mcpgw.fullname" .) }}
{{- end }}

{{- define "mcpgw.proxy.fullname" -}}
{{- printf "%s-proxy" (include "mcpgw.fullname" .) }}
{{- end }}

{{- define "mcpgw.controlPlane.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (include "mcpgw.controlPlane.fullname" .) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcpgw.proxy.serviceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create }}
{{- default (include "mcpgw.proxy.fullname" .) .Values.proxy.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.proxy.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: (dict "ctx" $ "image" .Values.proxy.image). */}}
{{- define "mcpgw.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The Secret holding the planes' secrets: the operator's or the chart's. */}}
{{- define "mcpgw.secretName" -}}
{{- default (include "mcpgw.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "mcpgw.postgresql.host" -}}
{{- printf "%s-postgresql" (include "mcpgw.fullname" .) }}
{{- end }}

{{- define "mcpgw.redis.host" -}}
{{- printf "%s-redis" (include "mcpgw.fullname" .) }}
{{- end }}

{{/* The proxies' base URL, shared with the control plane so token audiences match resource URLs. */}}
{{- define "mcpgw.publicUrl" -}}
{{- $ingress := .Values.ingress.proxy }}
{{- $route := .Values.httpRoute.proxy }}
{{- if .Values.proxy.publicUrl }}
{{- .Values.proxy.publicUrl | trimSuffix "/" }}
{{- else if and $ingress.enabled $ingress.hosts }}
{{- $host := (first $ingress.hosts).host }}
{{- $tls := false }}
{{- range $ingress.tls }}{{ if has $host .hosts }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else if and $route.enabled $route.hostnames }}
{{- printf "%s://%s" (ternary "https" "http" $route.https) (first $route.hostnames) }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "mcpgw.proxy.fullname" .) .Release.Namespace (int .Values.proxy.service.port) }}
{{- end }}
{{- end }}

{{/* The authorization server's issuer (--issuer-url). */}}
{{- define "mcpgw.issuerUrl" -}}
{{- $ingress := .Values.ingress.controlPlane }}
{{- $route := .Values.httpRoute.controlPlane }}
{{- if .Values.controlPlane.issuerUrl }}
{{- .Values.controlPlane.issuerUrl | trimSuffix "/" }}
{{- else if and $ingress.enabled $ingress.hosts }}
{{- $host := (first $ingress.hosts).host }}
{{- $tls := false }}
{{- range $ingress.tls }}{{ if has $host .hosts }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else if and $route.enabled $route.hostnames }}
{{- printf "%s://%s" (ternary "https" "http" $route.https) (first $route.hostnames) }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "mcpgw.controlPlane.fullname" .) .Release.Namespace (int .Values.controlPlane.service.httpPort) }}
{{- end }}
{{- end }}

{{/*
`Host` values the proxies serve: loopback (kubectl port-forward), the MCP Service's in-cluster names, the
public URL's host, every ingress or route host, and proxy.allowedHosts.
*/}}
{{- define "mcpgw.allowedHosts" -}}
{{- $svc := include "mcpgw.proxy.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list "localhost" "127.0.0.1" "[::1]" $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $hosts = append $hosts (urlParse (include "mcpgw.publicUrl" .)).hostname }}
{{- if .Values.ingress.proxy.enabled }}
{{- range .Values.ingress.proxy.hosts }}{{ $hosts = append $hosts .host }}{{ end }}
{{- end }}
{{- if .Values.httpRoute.proxy.enabled }}
{{- range .Values.httpRoute.proxy.hostnames }}{{ $hosts = append $hosts . }}{{ end }}
{{- end }}
{{- concat $hosts .Values.proxy.allowedHosts | uniq | join "," }}
{{- end }}

{{/* Pod security context shared by every pod of the chart except the databases. */}}
{{- define "mcpgw.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context shared by every container of the chart. */}}
{{- define "mcpgw.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end }}

{{/* Replicas preferably on different nodes: (dict "ctx" $ "component" "proxy" "affinity" .Values.proxy.affinity). */}}
{{- define "mcpgw.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "mcpgw.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* An env var from the planes' Secret: (dict "ctx" $ "name" "MCPGW_ADMIN_TOKEN" "key" "admin-token" "optional" false). */}}
{{- define "mcpgw.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mcpgw.secretName" .ctx }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Base64 of a secret value: the given one, else the one already stored, else the generated one. */}}
{{- define "mcpgw.secretValue" -}}
{{- if .value }}
{{- .value | b64enc }}
{{- else if hasKey .stored .key }}
{{- index .stored .key }}
{{- else }}
{{- .generated | b64enc }}
{{- end }}
{{- end }}

{{/* Egress rule for DNS (cluster DNS or a node-local cache, wherever it runs). */}}
{{- define "mcpgw.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
OpenTelemetry settings of both planes (nothing when no collector is set).
*/}}
{{- define "mcpgw.tracingEnv" -}}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
- name: MCPGW_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: MCPGW_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: MCPGW_OTLP_SAMPLE_RATIO
  value: {{ .sampleRatio | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
