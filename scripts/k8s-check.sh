#!/usr/bin/env bash
# `make k8s-check`: the chart, the manifests and the alerts, checked offline with the real
# tools (helm v4, kubectl's kustomize, kubernetes-validate's schemas, promtool):
#  1. helm lint with the CPU and the GPU values (values.schema.json included);
#  2. helm template for both, every built-in object validated (strict) against the
#     Kubernetes 1.35 schemas, every InferencePool against the generated CRD's schema;
#  3. the CRD in k8s/crds and the chart's copy equal the one the Rust types generate, and
#     the k8s/ manifests equal what scripts/k8s-generate.sh makes of the chart; both
#     kustomize overlays build and validate;
#  4. promtool check rules and promtool test rules (alert unit tests).
# Ends with `k8s-check: ok`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/k8s-tools.sh env)"
CHART=helm/visionfleet
CRD=k8s/crds/inferencepools.visionfleet.io.yaml
K8S_VERSION=1.35.0
PY=.state/k8s-venv/bin/python
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

validate() { # validate FILE: built-in kinds strictly, custom kinds against their CRD
  "$KUBERNETES_VALIDATE" --strict --quiet --no-warn -k "$K8S_VERSION" "$1"
  "$PY" tools/k8s/validate_custom.py --crd "$CRD" \
    --no-schema ServiceMonitor --no-schema PrometheusRule "$1"
}

echo "== helm lint"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" -f "$CHART/values-gpu.yaml"

echo "== helm template, validated"
for flavour in cpu gpu; do
  extra=()
  [[ $flavour == gpu ]] && extra=(-f "$CHART/values-gpu.yaml")
  "$HELM" template visionfleet "$CHART" --namespace visionfleet --include-crds \
    --set monitoring.force=true "${extra[@]}" >"$TMP/$flavour.yaml"
  validate "$TMP/$flavour.yaml"
done
grep -q 'nvidia.com/gpu' "$TMP/gpu.yaml" || { echo "GPU values rendered no GPU request" >&2; exit 1; }

echo "== generated files up to date"
scripts/k8s-generate.sh "$TMP/k8s"
for f in crds/inferencepools.visionfleet.io.yaml base/visionfleet.yaml \
  overlays/cpu/inferencepool.yaml overlays/gpu/inferencepool.yaml; do
  diff -u "k8s/$f" "$TMP/k8s/$f" >&2 || {
    echo "k8s/$f is stale: run scripts/k8s-generate.sh and commit the result" >&2
    exit 1
  }
done
diff -u "$CRD" "$CHART/crds/inferencepools.visionfleet.io.yaml" >&2 || {
  echo "$CHART/crds differs from $CRD: copy the generated CRD into the chart" >&2
  exit 1
}
for overlay in cpu gpu; do
  "$KUBECTL" kustomize "k8s/overlays/$overlay" >"$TMP/kustomize-$overlay.yaml"
  validate "$TMP/kustomize-$overlay.yaml"
done

echo "== alerts"
scripts/promtool.sh check rules "$CHART/files/prometheus-rules.yaml"
scripts/promtool.sh test rules "$CHART/tests/prometheus-rules.test.yaml"
"$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$CHART/files/dashboard.json"

echo "k8s-check: ok"
