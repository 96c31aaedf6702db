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
{{- include "rotator.validateSchedule" . }}
{{- include "rotator.validateSecurity" . }}
{{- include "rotator.validateWiring" . }}
{{- end }}

{{/*
The CronJob's schedule (the standard five fields, or a @-macro, as the CronJob controller parses
it) and time zone (a name of the IANA database, files/timezones.txt): Kubernetes itself would take
the CronJob and never run it, or refuse it only at apply time.
*/}}
{{- define "rotator.validateSchedule" -}}
{{- if eq .Values.mode "cronjob" }}
{{- $step := "(/[0-9]+)?" }}
{{- $field := "^(\\*|%s(-%s)?)%s(,(\\*|%s(-%s)?)%s)*$" }}
{{- $names := dict
  "minute" (list "([0-5]?[0-9])" false)
  "hour" (list "([01]?[0-9]|2[0-3])" false)
  "day of month" (list "(0?[1-9]|[12][0-9]|3[01])" true)
  "month" (list "(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))" false)
  "day of week" (list "([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))" true) }}
{{- $schedule := trim (toString .Values.cronjob.schedule) }}
{{- if not (regexMatch "^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$" $schedule) }}
{{- $parts := regexSplit "\\s+" $schedule -1 }}
{{- if ne (len $parts) 5 }}
{{- fail (printf "cronjob.schedule %q: needs 5 fields (minute hour day-of-month month day-of-week) or a macro like @hourly" $schedule) }}
{{- end }}
{{- range $i, $name := list "minute" "hour" "day of month" "month" "day of week" }}
{{- $atom := index (get $names $name) 0 }}
{{- $re := printf $field $atom $atom $step $atom $atom $step }}
{{- $value := index $parts $i }}
{{- if not (or (regexMatch $re $value) (and (index (get $names $name) 1) (eq $value "?"))) }}
{{- fail (printf "cronjob.schedule %q: %q is not a valid %s field" $schedule $value $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.cronjob.timeZone }}
{{- if not (has . (splitList "\n" ($.Files.Get "files/timezones.txt"))) }}
{{- fail (printf "cronjob.timeZone %q: not a time zone name of the IANA database (like Europe/London or UTC)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The restricted Pod Security Standard, refused at install with the value named rather than by the
namespace's admission (which names only the pod) or, worse, run as root where nothing enforces it.
*/}}
{{- define "rotator.validateSecurity" -}}
{{- $pod := .Values.podSecurityContext | default dict }}
{{- $ctr := .Values.securityContext | default dict }}
{{- range $where, $sc := dict "podSecurityContext" $pod "securityContext" $ctr }}
{{- if and (hasKey $sc "runAsUser") (eq (int $sc.runAsUser) 0) }}
{{- fail (printf "%s.runAsUser: 0 (root) is refused: the restricted Pod Security Standard needs a non-root user (the image runs as 10001)" $where) }}
{{- end }}
{{- if and (hasKey $sc "runAsNonRoot") (not $sc.runAsNonRoot) }}
{{- fail (printf "%s.runAsNonRoot: false is refused: the restricted Pod Security Standard needs true" $where) }}
{{- end }}
{{- with $sc.seccompProfile }}
{{- if not (has .type (list "RuntimeDefault" "Localhost")) }}
{{- fail (printf "%s.seccompProfile.type: %v is refused: the restricted Pod Security Standard needs RuntimeDefault or Localhost" $where .type) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or $pod.runAsNonRoot $ctr.runAsNonRoot) }}
{{- fail "podSecurityContext.runAsNonRoot or securityContext.runAsNonRoot must be true (restricted Pod Security Standard)" }}
{{- end }}
{{- if not (or $pod.seccompProfile $ctr.seccompProfile) }}
{{- fail "podSecurityContext.seccompProfile or securityContext.seccompProfile must be set, to RuntimeDefault (restricted Pod Security Standard)" }}
{{- end }}
{{- if ne (toString (dig "allowPrivilegeEscalation" "unset" $ctr)) "false" }}
{{- fail "securityContext.allowPrivilegeEscalation must be false (restricted Pod Security Standard)" }}
{{- end }}
{{- if $ctr.privileged }}
{{- fail "securityContext.privileged: true is refused (restricted Pod Security Standard)" }}
{{- end }}
{{- if not (has "ALL" (dig "capabilities" "drop" list $ctr)) }}
{{- fail "securityContext.capabilities.drop must hold ALL (restricted Pod Security Standard)" }}
{{- end }}
{{- range (dig "capabilities" "add" list $ctr) }}
{{- if ne . "NET_BIND_SERVICE" }}
{{- fail (printf "securityContext.capabilities.add: %s is refused (restricted Pod Security Standard: only NET_BIND_SERVICE)" .) }}
{{- end }}
{{- end }}
{{- range $i, $v := .Values.extraVolumes }}
{{- if hasKey $v "hostPath" }}
{{- fail (printf "extraVolumes[%d] (%s): hostPath volumes are refused (restricted Pod Security Standard)" $i $v.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The config against the pod: every variable the config names is set (secretEnv or extraEnv), every
secretEnv entry feeds something the worker reads, every signerFiles key is a signer's file, and
every file the config names lies on a volume the worker's container mounts. Each of these renders
a pod that crash-loops; here the install fails instead, naming the value.
*/}}
{{- define "rotator.validateWiring" -}}
{{- $config := .Values.config | default dict }}
{{- $store := $config.store | default dict }}
{{- $backend := $store.backend | default "file" }}
{{- $provided := list }}
{{- range .Values.secretEnv }}{{ $provided = append $provided .env }}{{ end }}
{{- range .Values.extraEnv }}{{ $provided = append $provided .name }}{{ end }}
{{- /* name -> the config field that names it */}}
{{- $needed := dict }}
{{- range $i, $c := $config.credentials | default list }}
{{- if and (eq (dig "signer" "source" "" $c) "env") (dig "signer" "env" "" $c) }}
{{- $_ := set $needed $c.signer.env (printf "config.credentials[%d].signer.env (%s)" $i $c.name) }}
{{- end }}
{{- end }}
{{- if eq $backend "file" }}
{{- $file := $store.file | default dict }}
{{- range $key := list "key_env" "previous_key_env" }}
{{- with get $file $key }}{{ $_ := set $needed . (printf "config.store.file.%s" $key) }}{{ end }}
{{- end }}
{{- end }}
{{- if eq $backend "vault" }}
{{- $auth := dig "vault" "auth" dict $store }}
{{- $method := $auth.method | default "token" }}
{{- if eq $method "token" }}
{{- if not $auth.token_file }}
{{- $_ := set $needed ($auth.token_env | default "VAULT_TOKEN") "config.store.vault.auth.token_env" }}
{{- end }}
{{- end }}
{{- if eq $method "approle" }}
{{- range $key := list "role_id_env" "secret_id_env" }}
{{- with get $auth $key }}{{ $_ := set $needed . (printf "config.store.vault.auth.%s" $key) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Egress proxies' passwords (clob.proxy, store.vault.proxy, store.aws.proxy). */}}
{{- $proxies := dict "config.clob.proxy" (dig "proxy" dict ($config.clob | default dict)) }}
{{- $_ := set $proxies "config.store.vault.proxy" (dig "vault" "proxy" dict $store) }}
{{- $_ := set $proxies "config.store.aws.proxy" (dig "aws" "proxy" dict $store) }}
{{- range $where := keys $proxies | sortAlpha }}
{{- with (get $proxies $where | default dict).password_env }}{{ $_ := set $needed . (printf "%s.password_env" $where) }}{{ end }}
{{- end }}
{{- range $name := keys $needed | sortAlpha }}
{{- if not (has $name $provided) }}
{{- fail (printf "%s: the worker reads environment variable %s, which no secretEnv (or extraEnv) entry sets" (get $needed $name) $name) }}
{{- end }}
{{- end }}
{{- range $i, $e := .Values.secretEnv }}
{{- if not (or (hasKey $needed $e.env) (regexMatch "^(AWS_[A-Z_]+|VAULT_TOKEN|ROTATOR_[A-Z0-9_]+__[A-Z0-9_]+)$" $e.env)) }}
{{- fail (printf "secretEnv[%d].env %s: nothing in config names this variable (signer.env, store.file.key_env, store.vault.auth.*_env, *.proxy.password_env), so the worker would never read it" $i $e.env) }}
{{- end }}
{{- end }}
{{- /* Where files can be: the volumes the worker's container mounts (and the image's own CA certificates). */}}
{{- $mounts := list "/etc/ssl/certs" }}
{{- $volumes := list "config" "tmp" }}
{{- if .Values.signerFiles }}{{ $mounts = append $mounts .Values.signerFilesDir }}{{ $volumes = append $volumes "signers" }}{{ end }}
{{- if eq (include "rotator.automountToken" .) "true" }}{{ $mounts = append $mounts "/var/run/secrets/kubernetes.io/serviceaccount" }}{{ end }}
{{- range .Values.extraVolumes }}{{ $volumes = append $volumes .name }}{{ end }}
{{- range $i, $m := .Values.extraVolumeMounts }}
{{- if not (has $m.name $volumes) }}
{{- fail (printf "extraVolumeMounts[%d].name %s: no volume of that name (extraVolumes)" $i $m.name) }}
{{- end }}
{{- $mounts = append $mounts $m.mountPath }}
{{- end }}
{{- $files := dict }}
{{- $signerFiles := dict }}
{{- range $i, $c := $config.credentials | default list }}
{{- if eq (dig "signer" "source" "" $c) "file" }}
{{- $_ := set $files (printf "config.credentials[%d].signer.path (%s)" $i $c.name) $c.signer.path }}
{{- $_ := set $signerFiles (toString $c.signer.path) true }}
{{- end }}
{{- end }}
{{- if eq $backend "vault" }}
{{- $vault := $store.vault | default dict }}
{{- range $key := list "ca_cert" "client_cert" "client_key" }}
{{- with dig "tls" $key "" $vault }}{{ $_ := set $files (printf "config.store.vault.tls.%s" $key) . }}{{ end }}
{{- end }}
{{- range $key := list "token_file" "role_id_file" "secret_id_file" "jwt_file" }}
{{- with dig "auth" $key "" $vault }}{{ $_ := set $files (printf "config.store.vault.auth.%s" $key) . }}{{ end }}
{{- end }}
{{- end }}
{{- range $where := keys $proxies | sortAlpha }}
{{- with (get $proxies $where | default dict).password_file }}{{ $_ := set $files (printf "%s.password_file" $where) . }}{{ end }}
{{- end }}
{{- range $field := keys $files | sortAlpha }}
{{- $path := get $files $field }}
{{- $on := false }}
{{- range $mounts }}{{ if hasPrefix (printf "%s/" (trimSuffix "/" .)) $path }}{{ $on = true }}{{ end }}{{ end }}
{{- if not $on }}
{{- fail (printf "%s %s: no volume is mounted there (signerFiles for signer keys; extraVolumes with extraVolumeMounts for anything else)" $field $path) }}
{{- end }}
{{- end }}
{{- range $i, $f := .Values.signerFiles }}
{{- $path := printf "%s/%s" (trimSuffix "/" $.Values.signerFilesDir) $f.name }}
{{- if not (hasKey $signerFiles $path) }}
{{- fail (printf "signerFiles[%d].name %s: no signer has path %s (credentials[].signer: {source: file, path: %s})" $i $f.name $path $path) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod spec. Call with (dict "root" $ "args" (list ...) "restartPolicy" "Never" "probes" bool
"spread" bool); spread adds the replicas' topology spread constraints.
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
{{- if $.spread }}
{{- include "rotator.topologySpread" $root }}
{{- end }}
{{- end }}

{{/*
Where the Deployment's replicas go when there is more than one: the values' constraints (each given
the pods' selector labels unless it has its own), or across nodes and zones.
*/}}
{{- define "rotator.topologySpread" -}}
{{- $selector := dict "matchLabels" (include "rotator.selectorLabels" . | fromYaml) }}
{{- $constraints := list }}
{{- range .Values.deployment.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}{{ $_ := set $c "labelSelector" $selector }}{{ end }}
{{- $constraints = append $constraints $c }}
{{- else }}
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
{{- $constraints = append $constraints (dict "maxSkew" 1 "topologyKey" . "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" $selector) }}
{{- end }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}

{{/*
The runbook the alerts link to: runbookBaseUrl, else the project's docs/runbook.md at the tag of the
chart's appVersion.
*/}}
{{- define "rotator.runbookBaseUrl" -}}
{{- .Values.runbookBaseUrl | default (printf "%s/blob/v%s/docs/runbook.md" (trimSuffix "/" .Chart.Home) .Chart.AppVersion) }}
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
