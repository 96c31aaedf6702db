{{/*
Names, labels and the pod spec shared by the CronJob, the Deployment and the test pod.
*/}}

{{- define "rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name. Truncated at 52 characters, not 63: a CronJob's Jobs append 11 characters
to its name and a Job name is a label value (63 at most).
*/}}
{{- define "rotator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rotator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rotator.labels" -}}
helm.sh/chart: {{ include "rotator.chart" . }}
{{ include "rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rotator
{{- end }}

{{/* Selectors use name and instance only: the other labels change across upgrades. */}}
{{- define "rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Whether the pod gets a service account token: only for Vault Kubernetes auth, which the store's
config asks for itself (store.vault.auth.method: kubernetes) and vault.kubernetesAuth asks for on
behalf of anything else that logs in that way.
*/}}
{{- define "rotator.automountToken" -}}
{{- $method := dig "store" "vault" "auth" "method" "" .Values.config }}
{{- $storeNeedsIt := and (eq (dig "store" "backend" "" .Values.config) "vault") (eq $method "kubernetes") }}
{{- or .Values.vault.kubernetesAuth $storeNeedsIt }}
{{- end }}

{{- define "rotator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "rotator.metricsPort" -}}
{{- $metrics := .Values.config.metrics | default dict }}
{{- $metrics.port | default 9464 | int }}
{{- end }}

{{/*
The config file as the worker reads it: values.config, plus the Pushgateway URL in cronjob mode.
Also the one place that refuses settings the chart cannot honour, so every template that includes
it fails the same way.
*/}}
{{- define "rotator.config" -}}
{{- include "rotator.validate" . }}
{{- $config := deepCopy .Values.config }}
{{- if and (eq .Values.mode "cronjob") .Values.pushgateway.url }}
{{- $metrics := get $config "metrics" | default dict }}
{{- $_ := set $metrics "pushgateway" .Values.pushgateway.url }}
{{- $_ := set $config "metrics" $metrics }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
A 64-hex-digit string is what an Ethereum private key (or an API secret) looks like: such a value
in the config or in extraEnv means a secret was pasted into values, where it would be stored in
the Helm release and the ConfigMap in clear text.
*/}}
{{- define "rotator.validate" -}}
{{- $hex := "(^|[^0-9A-Fa-f])(0x)?[0-9A-Fa-f]{64}([^0-9A-Fa-f]|$)" }}
{{- if regexMatch $hex (toJson .Values.config) }}
{{- fail "config: a value looks like a private key; name where the key is (secretEnv, signerFiles, Vault, KMS) instead of inlining it" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and .value (regexMatch $hex (toString .value)) }}
{{- fail (printf "extraEnv[%s]: the value looks like a private key; use secretEnv" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (ne .Values.mode "deployment") }}
{{- fail "serviceMonitor.enabled needs mode: deployment (a CronJob has no endpoint to scrape; set pushgateway.url)" }}
{{- end }}
{{- if and .Values.pushgateway.url (ne .Values.mode "cronjob") }}
{{- fail "pushgateway.url applies to mode: cronjob only (the daemon is scraped; use serviceMonitor)" }}
{{- end }}
{{- if and (eq .Values.mode "deployment") (gt (int .Values.deployment.replicas) 1) (eq (dig "store" "backend" "file" .Values.config) "file") }}
{{- fail "deployment.replicas above 1 needs a store the pods share (store.backend: vault or aws): each pod's file store is its own, so every replica would lead and rotate" }}
{{- end }}
{{- end }}

{{/*
The pod spec. Call with (dict "root" $ "args" (list ...) "restartPolicy" "Never" "probes" bool).
*/}}
{{- define "rotator.podSpec" -}}
{{- $root := .root }}
{{- with $root -}}
serviceAccountName: {{ include "rotator.serviceAccountName" . }}
automountServiceAccountToken: {{ include "rotator.automountToken" . }}
{{- /* Service links share the worker's ROTATOR_ prefix (a release "rotator-prod" gets
       ROTATOR_PROD_SERVICE_PORT, ...), and nothing here reads them: Services are found by DNS. */}}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}
restartPolicy: {{ .restartPolicy }}
{{- with $root }}
{{- if .Values.signerFiles }}
initContainers:
  # A Secret volume cannot hand a non-root user a file it owns with mode 0400, and the worker
  # refuses key files that group or others can read: copy each key into a memory-backed volume.
  - name: signer-files
    image: {{ include "rotator.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["install", "-m", "0400", "-t", "/signers"]
    args:
      {{- range .Values.signerFiles }}
      - /signer-secrets/{{ .name }}
      {{- end }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    volumeMounts:
      - name: signer-secrets
        mountPath: /signer-secrets
        readOnly: true
      - name: signers
        mountPath: /signers
{{- end }}
{{- end }}
containers:
  - name: rotator
    image: {{ include "rotator.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    {{- with $root }}
    {{- if or .Values.secretEnv .Values.extraEnv }}
    env:
      {{- range .Values.secretEnv }}
      - name: {{ .env }}
        valueFrom:
          secretKeyRef:
            name: {{ .secretName }}
            key: {{ .key }}
      {{- end }}
      {{- with .Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
    {{- end }}
    {{- if .probes }}
    ports:
      - name: metrics
        containerPort: {{ include "rotator.metricsPort" $root }}
        protocol: TCP
    livenessProbe:
      {{- toYaml $root.Values.deployment.livenessProbe | nindent 6 }}
    readinessProbe:
      {{- toYaml $root.Values.deployment.readinessProbe | nindent 6 }}
    {{- end }}
    {{- with $root }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/rotator
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if .Values.signerFiles }}
      - name: signers
        mountPath: {{ .Values.signerFilesDir }}
        readOnly: true
      {{- end }}
      {{- with .Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "rotator.fullname" . }}
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: {{ .Values.tmpSizeLimit }}
  {{- if .Values.signerFiles }}
  - name: signer-secrets
    projected:
      # Mounted in the init container only; readable through the pod's fsGroup.
      defaultMode: 288 # 0440
      sources:
        {{- range .Values.signerFiles }}
        - secret:
            name: {{ .secretName }}
            items:
              - key: {{ .key }}
                path: {{ .name }}
        {{- end }}
  - name: signers
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod metadata: labels and the config checksum that rolls the pods on a config change. */}}
{{- define "rotator.podMetadata" -}}
annotations:
  checksum/config: {{ include "rotator.config" . | sha256sum }}
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
labels:
  {{- include "rotator.labels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Whether to create a Prometheus Operator object (as external-secrets' chart does): "true" when it is
enabled and the cluster serves its CRD (.Capabilities.APIVersions: the cluster's, or
`--api-versions` offline), or renderMode is alwaysRender; with failIfMissing and no CRD the install
fails. Call with (dict "root" $ "kind" "ServiceMonitor" "key" "serviceMonitor").
*/}}
{{- define "rotator.operatorObject" -}}
{{- $values := get .root.Values .key }}
{{- $api := printf "monitoring.coreos.com/v1/%s" .kind }}
{{- if $values.enabled }}
{{- if or (eq $values.renderMode "alwaysRender") (.root.Capabilities.APIVersions.Has $api) }}true
{{- else if eq $values.renderMode "failIfMissing" }}
{{- fail (printf "%s.enabled: the cluster has no %s CRD (%s): install the Prometheus Operator's CRDs first, or set %s.renderMode: skipIfMissing (create none) or alwaysRender" .key .kind $api .key) }}
{{- end }}
{{- end }}
{{- end }}
