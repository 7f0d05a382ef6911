{{/* Names and labels. */}}
{{- define "minion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "minion.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (worker, scheduler, migrate). */}}
{{- define "minion.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "minion.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "minion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "minion.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the database URL. */}}
{{- define "minion.databaseSecret" -}}
{{ .Values.database.existingSecret | default (printf "%s-database" (include "minion.fullname" .)) }}
{{- end -}}
{{- define "minion.databaseSecretKey" -}}
{{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{- end -}}

{{/* The Secret holding S3 credentials, or nothing when the pod's identity is used. */}}
{{- define "minion.storeSecret" -}}
{{- if .Values.store.s3.existingSecret -}}
{{ .Values.store.s3.existingSecret }}
{{- else if .Values.store.s3.accessKeyId -}}
{{ printf "%s-store" (include "minion.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* Environment of every minion container: settings from values, secrets by reference. */}}
{{- define "minion.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "minion.databaseSecret" . }}
      key: {{ include "minion.databaseSecretKey" . }}
- name: MINION_STORE
  value: {{ .Values.store.url | quote }}
- name: MINION_CONFIG
  value: /etc/minion/config/minion.toml
- name: MINION_JOBS_DIR
  value: /etc/minion/jobs
- name: MINION_STAGING_DIR
  value: /var/lib/minion/staging
- name: TMPDIR
  value: /var/lib/minion/staging
- name: AWS_DEFAULT_REGION
  value: {{ .Values.store.s3.region | quote }}
{{- with .Values.store.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.store.s3.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- with include "minion.storeSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{/* The restricted pod security standard, for pods and containers. */}}
{{- define "minion.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "minion.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Volumes every minion pod mounts: config, schedules, and writable staging. */}}
{{- define "minion.volumes" -}}
- name: config
  configMap:
    name: {{ include "minion.fullname" .root }}-config
- name: jobs
  configMap:
    name: {{ include "minion.fullname" .root }}-jobs
- name: staging
  emptyDir:
    sizeLimit: {{ .stagingSizeLimit | default "1Gi" }}
{{- end -}}
{{- define "minion.volumeMounts" -}}
- name: config
  mountPath: /etc/minion/config
  readOnly: true
- name: jobs
  mountPath: /etc/minion/jobs
  readOnly: true
- name: staging
  mountPath: /var/lib/minion/staging
{{- end -}}

{{/* Probes on the HTTP listener. */}}
{{- define "minion.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* The console's flags, for the pods that serve it (see values: console). */}}
{{- define "minion.consoleArgs" -}}
{{- if .Values.console.enabled }}
{{- if .Values.console.write }}
- --console-write
{{- else }}
- --console
{{- end }}
{{- end }}
{{- end -}}

{{/* Which pods serve the console: the schedulers, or the workers when they run the scheduler. */}}
{{- define "minion.consoleComponent" -}}
{{- if .Values.scheduler.enabled }}scheduler{{ else }}worker{{ end }}
{{- end -}}
