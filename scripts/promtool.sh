#!/usr/bin/env bash
# Provides promtool (from Debian's `prometheus` package, unpacked into .state/prometheus
# without installing the server or any service) and runs it with the given arguments.
# Idempotent: the package is fetched once. `scripts/promtool.sh install` only installs.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.state/prometheus
PROMTOOL=$DIR/usr/bin/promtool
if [[ ! -x "$PROMTOOL" ]]; then
  mkdir -p "$DIR/deb"
  if ! (cd "$DIR/deb" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$DIR/deb" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$DIR"/deb/prometheus_*.deb "$DIR"
  rm -rf "$DIR/deb"
fi
if [[ "${1:-}" == install ]]; then
  exit 0
fi
exec "$PROMTOOL" "$@"
