{{/*
The worker pod template, shared by the StatefulSet and the LeaderWorkerSet (where it serves as the
template of every pod in the group: rank 0 needs nothing the others do not).
*/}}
{{- define "gemmaserve.workerPodTemplate" -}}
{{- $w := .Values.workers }}
{{- $resources := deepCopy (default dict $w.resources) }}
{{- if eq .Values.backend "cuda" }}
{{- $limits := default dict $resources.limits }}
{{- if not (hasKey $limits "nvidia.com/gpu") }}
{{- $_ := set $limits "nvidia.com/gpu" (int $w.ranksPerPod) }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
metadata:
  labels:
    {{- include "gemmaserve.componentLabels" (dict "root" . "component" "worker") | nindent 4 }}
  {{- with $w.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "gemmaserve.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: worker
      image: {{ include "gemmaserve.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /bin/bash
        - -c
        - |
          {{- include "gemmaserve.workerScript" . | nindent 10 }}
        - gemmaserve-worker
      args:
        - --coordinator={{ include "gemmaserve.internalServiceName" . }}:{{ .Values.coordinator.ports.internal }}
        - --world-size={{ .Values.parallelism.worldSize }}
        - --collective-host=$(POD_IP)
        {{- include "gemmaserve.internalAuthArgs" . | nindent 8 }}
        {{- if gt (int $w.threads) 0 }}
        - --threads={{ $w.threads }}
        {{- end }}
        {{- if gt (int $w.kvCacheMb) 0 }}
        - --kv-cache-mb={{ $w.kvCacheMb }}
        {{- end }}
        {{- if eq .Values.backend "cuda" }}
        - --precision={{ $w.precision }}
        - --gpu-memory-utilization={{ $w.gpuMemoryUtilization }}
        {{- if $w.enforceEager }}
        - --enforce-eager
        {{- end }}
        {{- end }}
        {{- range $w.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        # The root filesystem is read-only: caches that go under $HOME (CUDA's JIT cache) use /tmp.
        - name: HOME
          value: /tmp
        {{- if eq .Values.backend "cuda" }}
        {{- range $name, $value := $w.ncclEnv }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
        {{- end }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- range $i := until (int $w.ranksPerPod) }}
        - name: metrics-{{ $i }}
          containerPort: {{ add (int $w.metricsPort) $i }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: /health
          port: metrics-0
        {{- toYaml $w.startupProbe | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /health
          port: metrics-0
        {{- toYaml $w.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /health
          port: metrics-0
        {{- toYaml $w.readinessProbe | nindent 8 }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "gemmaserve.modelVolumeMount" . | nindent 8 }}
        {{- include "gemmaserve.secretVolumeMounts" . | nindent 8 }}
        - name: dshm
          mountPath: /dev/shm
        - name: tmp
          mountPath: /tmp
  volumes:
    {{- include "gemmaserve.modelVolume" . | nindent 4 }}
    {{- include "gemmaserve.secretVolumes" (dict "root" . "worker" true) | nindent 4 }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $w.shmSizeLimit }}
    - name: tmp
      emptyDir: {}
  {{- with $w.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
