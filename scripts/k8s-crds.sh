#!/usr/bin/env bash
# The real CRDs of the Prometheus operator's ServiceMonitor and KEDA's ScaledObject, for
# the operator's integration test, taken from the projects' own Go module zips (the Go
# module proxy; the module cache verifies them against sum.golang.org):
#   github.com/prometheus-operator/prometheus-operator  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
#   github.com/kedacore/keda/v2                         config/crd/bases/keda.sh_scaledobjects.yaml
# Usage: scripts/k8s-crds.sh install   copy both into .state/k8s-crds/ (idempotent)
#        scripts/k8s-crds.sh dir       print that folder
set -euo pipefail
cd "$(dirname "$0")/.."
PROMETHEUS_OPERATOR_VERSION=v0.88.0
KEDA_VERSION=v2.18.1
OUT=.state/k8s-crds
STAMP="$OUT/versions"
WANT="prometheus-operator=$PROMETHEUS_OPERATOR_VERSION keda=$KEDA_VERSION"

module_dir() { # module@version -> its folder in the module cache
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1") |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
  rm -rf "$tmp"
}

case ${1:-} in
  install)
    if [[ -f "$STAMP" && $(cat "$STAMP") == "$WANT" && -f "$OUT/monitoring.coreos.com_servicemonitors.yaml" && -f "$OUT/keda.sh_scaledobjects.yaml" ]]; then
      exit 0
    fi
    mkdir -p "$OUT"
    prom=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
    keda=$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
    install -m 0644 "$prom/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$OUT/"
    install -m 0644 "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" "$OUT/"
    echo "$WANT" >"$STAMP"
    echo "k8s-crds: $WANT in $OUT"
    ;;
  dir) echo "$PWD/$OUT" ;;
  *) echo "usage: $0 install|dir" >&2; exit 2 ;;
esac
