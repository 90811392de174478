#!/usr/bin/env bash
# System build dependencies of the Rust build, idempotent: OpenSSL's development files,
# which librdkafka (the rdkafka crate's `ssl` feature) compiles against for TLS to Kafka
# (security.protocol SSL and SASL_SSL). Installed from Debian's packages when missing.
set -euo pipefail

if [[ -f /usr/include/openssl/ssl.h ]] || pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "build-deps: OpenSSL development files are missing and apt-get is not available; install them (Debian/Ubuntu: libssl-dev, Fedora: openssl-devel)" >&2
  exit 1
fi
echo "build-deps: installing libssl-dev (Debian) for librdkafka's TLS" >&2
sudo_if_needed=()
((EUID == 0)) || sudo_if_needed=(sudo)
"${sudo_if_needed[@]}" apt-get update -qq >/dev/null
"${sudo_if_needed[@]}" apt-get install -y -qq --no-install-recommends libssl-dev pkg-config >/dev/null
