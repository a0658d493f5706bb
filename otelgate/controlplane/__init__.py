"""A real Kubernetes control plane (etcd, kube-apiserver, the OpenTelemetry Operator) built from the Go module proxy
and run as local processes, so the API server and the Operator judge otelgate's manifests (docs/controlplane.md)."""
