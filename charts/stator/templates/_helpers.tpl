{{- define "stator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stator.labels" -}}
app.kubernetes.io/name: stator-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stator.selectorLabels" -}}
app.kubernetes.io/name: stator-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions over StreamJobs and the objects it runs them on, defined once and used
by the ClusterRole (all namespaces) or by each namespace's Role.
*/}}
{{- define "stator.jobRules" -}}
# Watch StreamJobs, and patch them to add and remove the cleanup finalizer.
- apiGroups: ["stator.dev"]
  resources: ["streamjobs"]
  verbs: ["get", "list", "watch", "patch"]
# Report phase, conditions, replicas and savepoints. The status is the write-ahead log of each
# operation: it is replaced (update, a PUT) under the resourceVersion that was read, so that two writers
# can never both advance an operation.
- apiGroups: ["stator.dev"]
  resources: ["streamjobs/status"]
  verbs: ["get", "update"]
# One pod per replica: created and replaced on upgrades, rescales and failures.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The headless Service of each job's replicas.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Per-replica volumes when a job asks for them; deleted with the job only when its policy says so.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The sidecars' admin token: created once per job and read to call the sidecars' admin API. Also
# `get` (metadata only) of the credentials Secret a job names, while its replicas do not start, to
# tell the user on the StreamJob that it is missing. No list or watch: no other Secret is read.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Events for what a person would want to know (created pods, savepoints, upgrades, rollbacks).
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
