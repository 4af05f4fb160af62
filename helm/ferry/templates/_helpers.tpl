{{/* The release's base name, kept within the 63 characters of a label value. */}}
{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (controller or agent); they never change across upgrades. */}}
{{- define "ferry.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ferry.secretName" -}}
{{ include "ferry.fullname" . }}-tokens
{{- end -}}

{{- define "ferry.caSecretName" -}}
{{ include "ferry.fullname" . }}-ca
{{- end -}}

{{- /*
  An init container that issues this pod's certificate from the cluster CA, into the tls volume.
  Arguments: root (the chart's context), name (the certificate's name, a shell word), hosts (shell words).
*/ -}}
{{- define "ferry.issueCertificate" -}}
- name: issue-certificate
  image: {{ include "ferry.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -eu
      cp /ca/ca.crt /ca/ca.key /tls/
      ferry tls issue {{ .name }} --dir /tls --days {{ .root.Values.tls.certValidityDays }}{{ range .hosts }} --host {{ . }}{{ end }}
      # The CA key stays in its secret: the running container gets the CA certificate and its own pair only.
      rm -f /tls/ca.key /tls/ca.srl
  env:
    - name: NODE_NAME
      valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
    - name: NODE_IP
      valueFrom: { fieldRef: { fieldPath: status.hostIP } }
    - name: POD_IP
      valueFrom: { fieldRef: { fieldPath: status.podIP } }
  volumeMounts:
    - { name: ca, mountPath: /ca, readOnly: true }
    - { name: tls, mountPath: /tls }
{{- end -}}

{{- /* The flags that make a service speak mTLS with the certificate issued above, or plain HTTP when tls.enabled is false. */ -}}
{{- define "ferry.transportArgs" -}}
{{- if .root.Values.tls.enabled }}
- --tls-ca=/tls/ca.crt
- --tls-cert=/tls/{{ .name }}.crt
- --tls-key=/tls/{{ .name }}.key
{{- else }}
- --allow-plain-http
{{- end }}
{{- end -}}
