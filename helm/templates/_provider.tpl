{{/* The provider container: the shim's sidecar (providerMode sidecar, over the unix socket) or
the only container of its own Deployment (providerMode remote, mutual TLS on a TCP port). */}}
{{- define "vn.providerContainer" -}}
- name: provider
  image: {{ include "vn.providerImage" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    {{- if eq .Values.providerMode "remote" }}
    # Mutual TLS: only clients with a certificate the Secret's ca.crt signed are served.
    - --listen=0.0.0.0:{{ .Values.remoteProvider.port }}
    - --tls-cert-file=/etc/vk/provider-tls/tls.crt
    - --tls-private-key-file=/etc/vk/provider-tls/tls.key
    - --client-ca-file=/etc/vk/provider-tls/ca.crt
    {{- with .Values.remoteProvider.allowedClientNames }}
    - --allowed-client-names={{ join "," . }}
    {{- end }}
    {{- else }}
    - --listen=unix:{{ include "vn.socket" . }}
    {{- end }}
    - --metrics-address=0.0.0.0:{{ .Values.metrics.providerPort }}
    {{- with .Values.clusterId }}
    # Cloud resources are tagged with it; adoption and clean-up touch only this cluster's.
    - --{{ ternary "installation-id" "cluster-id" (eq $.Values.provider "fargate") }}={{ . }}
    {{- end }}
    {{- range $k, $v := (get .Values.providerConfig .Values.provider) }}
    {{- if kindIs "bool" $v }}
    {{- if $v }}
    - --{{ $k }}
    {{- end }}
    {{- else if kindIs "slice" $v }}
    - --{{ $k }}={{ join "," $v }}
    {{- else }}
    - --{{ $k }}={{ include "vn.flagValue" $v }}
    {{- end }}
    {{- end }}
  env:
    - name: LOG_FORMAT
      value: {{ .Values.logging.format | quote }}
    - name: RUST_LOG
      value: {{ .Values.logging.level | quote }}
    {{- with include "vn.otlpEndpoint" . }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ . | quote }}
    {{- end }}
  {{- with .Values.credentials.existingSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  ports:
    {{- if eq .Values.providerMode "remote" }}
    - name: grpc
      containerPort: {{ .Values.remoteProvider.port }}
      protocol: TCP
    {{- end }}
    - name: prov-metrics
      containerPort: {{ .Values.metrics.providerPort }}
      protocol: TCP
  # The provider rebuilds its state from the cloud before it serves (and binds this port),
  # which takes one full list of the cloud's resources: give that up to five minutes.
  startupProbe:
    httpGet:
      path: /healthz
      port: prov-metrics
    periodSeconds: 5
    failureThreshold: 60
  livenessProbe:
    httpGet:
      path: /healthz
      port: prov-metrics
    periodSeconds: 10
    failureThreshold: 6
  resources:
    {{- toYaml .Values.resources.provider | nindent 4 }}
  securityContext:
    {{- include "vn.securityContext" . | nindent 4 }}
  volumeMounts:
    {{- if eq .Values.providerMode "remote" }}
    # The whole Secret (no subPath), so renewed certificates reach the provider.
    - name: provider-server-tls
      mountPath: /etc/vk/provider-tls
      readOnly: true
    {{- else }}
    - name: provider-socket
      mountPath: /var/run/vk
    {{- end }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* The remote provider's Service (and Deployment) name. */}}
{{- define "vn.providerService" -}}
{{- printf "%s-provider" (include "vn.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vn.providerSelectorLabels" -}}
app.kubernetes.io/name: virtual-node-provider
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
