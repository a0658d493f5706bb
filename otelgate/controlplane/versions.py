"""The one place for the versions of the real control plane and of the Operator the cluster stacks deploy.

The Operator is pinned to the newest release the Go module proxy serves (it answers for v0.140.0-v0.143.0 and
v0.148.0, and refuses v0.144-v0.147 and v0.149 onwards), so the Operator verified here is the Operator deployed.
``manifests/otel/operator-values.yaml`` (image tag) and the Helm chart pin of the kind stack must say the same;
tests/test_controlplane_pins.py guards that.
"""

from __future__ import annotations

OPERATOR_MODULE = "github.com/open-telemetry/opentelemetry-operator"
OPERATOR_VERSION = "0.148.0"
# open-telemetry/opentelemetry-helm-charts charts/opentelemetry-operator/Chart.yaml: 0.110.0 is the last chart
# release whose appVersion is 0.148.0 (tag opentelemetry-operator-0.110.0)
OPERATOR_CHART_VERSION = "0.110.0"

# k8s.io/kubernetes v1.34.3 with its staging modules replaced by the published k8s.io/* v0.34.3, the k8s.io
# library version the Operator v0.148.0 requires (its go.mod)
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "1.34.3"
KUBERNETES_STAGING_VERSION = "0.34.3"

ETCD_MODULE = "go.etcd.io/etcd/server/v3"
ETCD_VERSION = "3.6.6"
