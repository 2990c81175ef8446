{{/*
Names, labels and the pieces the coordinator and worker templates share. Cross-field rules the
JSON schema cannot express are checked in gemmaserve.validate, included by every workload.
*/}}

{{- define "gemmaserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gemmaserve.fullname" -}}
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

{{/* Object names. Truncated to leave room for the suffixes controllers append to pod names. */}}
{{- define "gemmaserve.coordinatorName" -}}
{{- printf "%s-coordinator" (include "gemmaserve.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}
{{- define "gemmaserve.internalServiceName" -}}
{{- printf "%s-coordinator-internal" (include "gemmaserve.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}
{{- define "gemmaserve.workerName" -}}
{{- printf "%s-worker" (include "gemmaserve.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}
{{- define "gemmaserve.authSecretName" -}}
{{- default (printf "%s-auth" (include "gemmaserve.fullname" . | trunc 40 | trimSuffix "-")) .Values.auth.existingSecret }}
{{- end }}
{{/* Not the workload's name: LeaderWorkerSet creates a headless Service named after itself. */}}
{{- define "gemmaserve.workerServiceName" -}}
{{- printf "%s-worker-headless" (include "gemmaserve.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}

{{- define "gemmaserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gemmaserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of one component's objects and pods: include with (dict "root" $ "component" "worker"). */}}
{{- define "gemmaserve.componentLabels" -}}
{{ include "gemmaserve.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "worker"). */}}
{{- define "gemmaserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gemmaserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gemmaserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gemmaserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gemmaserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Pods of the worker group: worldSize / ranksPerPod (divisibility checked in validate). */}}
{{- define "gemmaserve.numWorkerPods" -}}
{{- div (int .Values.parallelism.worldSize) (int .Values.workers.ranksPerPod) }}
{{- end }}

{{/*
Stops the render with a message. `helm lint` turns `fail` into a log line and renders on, so the
include of a template that cannot exist follows it: an error lint does report, naming the problem.
*/}}
{{- define "gemmaserve.fail" -}}
{{- fail . }}
{{- include (printf "invalid values: %s" .) dict }}
{{- end }}

{{/* Fails the render on settings the schema cannot relate to each other. */}}
{{- define "gemmaserve.validate" -}}
{{- $c := .Values.coordinator }}
{{- if ge (add (int $c.preStopSleepSeconds) (int $c.drainTimeoutSeconds)) (int $c.terminationGracePeriodSeconds) }}
{{- include "gemmaserve.fail" (printf "coordinator.preStopSleepSeconds (%d) + coordinator.drainTimeoutSeconds (%d) must be below coordinator.terminationGracePeriodSeconds (%d): the kubelet would kill the coordinator mid-drain" (int $c.preStopSleepSeconds) (int $c.drainTimeoutSeconds) (int $c.terminationGracePeriodSeconds)) }}
{{- end }}
{{- $w := .Values.workers }}
{{- if ne (mod (int .Values.parallelism.worldSize) (int $w.ranksPerPod)) 0 }}
{{- include "gemmaserve.fail" (printf "parallelism.worldSize (%d) must be a multiple of workers.ranksPerPod (%d)" (int .Values.parallelism.worldSize) (int $w.ranksPerPod)) }}
{{- end }}
{{- $ports := list (int $c.ports.grpc) (int $c.ports.http) (int $c.ports.internal) }}
{{- if ne (len ($ports | uniq)) 3 }}
{{- include "gemmaserve.fail" (printf "coordinator.ports must be distinct, got grpc %d, http %d, internal %d" (int $c.ports.grpc) (int $c.ports.http) (int $c.ports.internal)) }}
{{- end }}
{{- $auth := .Values.auth }}
{{- if and $auth.apiKeys.enabled (not $auth.existingSecret) (not $auth.apiKeys.keys) }}
{{- include "gemmaserve.fail" "auth.apiKeys.enabled needs auth.apiKeys.keys (or auth.existingSecret holding api-keys)" }}
{{- end }}
{{- if and $auth.existingSecret (or $auth.apiKeys.keys $auth.clusterSecret) }}
{{- include "gemmaserve.fail" "with auth.existingSecret the cluster secret and the API keys live in that Secret: leave auth.clusterSecret and auth.apiKeys.keys empty" }}
{{- end }}
{{- if and $auth.prefixCachePerKey (not $auth.apiKeys.enabled) }}
{{- include "gemmaserve.fail" "auth.prefixCachePerKey needs auth.apiKeys.enabled: the cache is salted by the client's key" }}
{{- end }}
{{- if gt (add (int $w.metricsPort) (int $w.ranksPerPod) -1) 65535 }}
{{- include "gemmaserve.fail" (printf "workers.metricsPort (%d) + ranksPerPod (%d) - 1 exceeds 65535" (int $w.metricsPort) (int $w.ranksPerPod)) }}
{{- end }}
{{- end }}

{{/*
The secrets both components mount: the auth Secret (workers get only its cluster-secret) and the
internal port's TLS Secret. Mode 0440 with the pod's fsGroup, so only the server's group reads them.
Include with (dict "root" $ "worker" true|false).
*/}}
{{- define "gemmaserve.secretVolumes" -}}
- name: auth
  secret:
    secretName: {{ include "gemmaserve.authSecretName" .root }}
    defaultMode: 288
    {{- if .worker }}
    items:
      - key: cluster-secret
        path: cluster-secret
    {{- end }}
{{- with .root.Values.tls.internalSecretName }}
- name: internal-tls
  secret:
    secretName: {{ . }}
    defaultMode: 288
{{- end }}
{{- end }}

{{- define "gemmaserve.secretVolumeMounts" -}}
- name: auth
  mountPath: /etc/gemmaserve/auth
  readOnly: true
{{- if .Values.tls.internalSecretName }}
- name: internal-tls
  mountPath: /etc/gemmaserve/internal-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The flags that point both components at those files. */}}
{{- define "gemmaserve.internalAuthArgs" -}}
- --cluster-secret-file=/etc/gemmaserve/auth/cluster-secret
{{- if .Values.tls.internalSecretName }}
- --internal-tls-cert=/etc/gemmaserve/internal-tls/tls.crt
- --internal-tls-key=/etc/gemmaserve/internal-tls/tls.key
- --internal-tls-ca=/etc/gemmaserve/internal-tls/ca.crt
{{- end }}
{{- end }}

{{/* The model volume, mounted read-only by the coordinator and every worker. */}}
{{- define "gemmaserve.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- else }}
  hostPath:
    path: {{ .Values.model.hostPath.path }}
    {{- with .Values.model.hostPath.type }}
    type: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "gemmaserve.modelVolumeMount" -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
  {{- with .Values.model.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}

{{/*
The worker container's command: starts ranksPerPod `gemmaserve worker` processes, rank
pod index × ranksPerPod + local rank, local rank i on device cuda:i (or cpu) with metrics on
metricsPort + i. The container args (shared flags) are passed to each through "$@". The pod index
is the StatefulSet ordinal (the hostname's last field) or, under LeaderWorkerSet, LWS_WORKER_INDEX.
When one rank exits the others are stopped and the container exits with its status: a collective
group cannot go on without a member, and the restart re-registers every rank.
*/}}
{{- define "gemmaserve.workerScript" -}}
set -u
{{- if eq .Values.workers.mode "leaderworkerset" }}
pod_index="${LWS_WORKER_INDEX:?LWS_WORKER_INDEX is not set}"
{{- else }}
pod_index="${HOSTNAME##*-}"
{{- end }}
ranks_per_pod={{ .Values.workers.ranksPerPod }}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
for ((i = 0; i < ranks_per_pod; i++)); do
  rank=$((pod_index * ranks_per_pod + i))
  {{- if eq .Values.backend "cuda" }}
  device="cuda:${i}"
  {{- else }}
  device="cpu"
  {{- end }}
  echo "gemmaserve worker: pod ${pod_index}, rank ${rank}, device ${device}"
  gemmaserve worker --rank "${rank}" --device "${device}" \
    --metrics-port "$(({{ .Values.workers.metricsPort }} + i))" "$@" &
  pids+=("$!")
done
wait -n
status=$?
kill -TERM "${pids[@]}" 2>/dev/null
wait
exit "${status}"
{{- end }}
