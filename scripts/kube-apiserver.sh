#!/usr/bin/env bash
# A real Kubernetes API server (with its own etcd) on loopback, for the operator's
# integration tests: the same set-up as controller-runtime's envtest. Nothing else of a
# cluster runs (no kubelet, no controller-manager, no scheduler), so no pod ever starts
# and no Deployment gets a ReplicaSet: tests check what the API server stores and
# serves (objects, status writes, RBAC, admission, CRD validation, watches).
#
# Both binaries are built from published Go modules: tools/k8s/apiserver (go.mod pins
# k8s.io/kubernetes and replaces its k8s.io/* staging modules, which it requires at
# v0.0.0, with their published releases) and tools/k8s/etcd (go.etcd.io/etcd/server/v3,
# whose root package is etcd's own `etcd` main). Needs Go (see the go lines of those
# go.mod files), openssl, curl, python3 (free ports), flock and setsid.
#
# Usage (from any working directory):
#   scripts/kube-apiserver.sh install
#       Build kube-apiserver and etcd into .state/k8s-apiserver/bin unless they are there
#       and were built from the current go.mod/go.sum (a stamp beside each binary).
#       Parallel callers are serialised with flock. The first build takes minutes.
#   scripts/kube-apiserver.sh start --dir DIR [--timeout SECONDS] [--owner-pid PID [--cleanup]]
#       Start etcd (data in DIR/etcd) and kube-apiserver on free loopback ports, wait
#       until /readyz answers ok, write DIR/kubeconfig (cluster-admin client certificate)
#       and print two lines: `kubeconfig=DIR/kubeconfig` and `server=https://127.0.0.1:PORT`.
#       The first start in DIR makes the certificates and picks the ports; a later start
#       on the same DIR reuses certificates, ports and data (and only starts what is not
#       running). With --owner-pid (alias --watch-pid), both servers are killed once
#       process PID exits (tests pass their own PID), and with --cleanup DIR is then
#       deleted too.
#   scripts/kube-apiserver.sh stop --dir DIR [--kill] [--timeout SECONDS]
#       Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after the timeout; --kill: SIGKILL
#       at once). Keeps DIR as it is. No error if nothing runs.
#   scripts/kube-apiserver.sh status --dir DIR
#       `etcd running pid=PID|stopped client=PORT` and `kube-apiserver running pid=PID|stopped port=PORT`.
#   scripts/kube-apiserver.sh gen-replace [--check]
#       Rewrite tools/k8s/apiserver/go.mod's replace block from k8s.io/kubernetes's own
#       go.mod (every `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X
#       v0.MINOR.PATCH`); with --check, only fail if go.mod differs from that.
#
# Layout of DIR:
#   pki/ca.{crt,key}            the CA: signs the serving and client certs, and is the
#                               --client-ca-file
#   pki/apiserver.{crt,key}     serving cert for 127.0.0.1, localhost, 10.0.0.1, kubernetes.default.svc
#   pki/admin.{crt,key}         client cert CN=admin, O=system:masters (cluster-admin)
#   pki/sa.{key,pub}            service-account token signing key pair
#   etcd/                       etcd's data dir
#   etcd.log, kube-apiserver.log  server output (appended)
#   ports.env                   ETCD_CLIENT_PORT, ETCD_PEER_PORT, APISERVER_PORT
#   pids                        `etcd PID` and `kube-apiserver PID` of the running servers
#   kubeconfig                  admin kubeconfig (certificates embedded)
#
# Environment:
#   GO      the go command for install (default: go)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.state/k8s-apiserver"
BIN="$STATE/bin"
LOCK="$STATE/.install.lock"
API_MOD="$ROOT/tools/k8s/apiserver"
ETCD_MOD="$ROOT/tools/k8s/etcd"
GO=${GO:-go}
# What the API server reports as its version (kubectl version, /version).
KUBE_VERSION=v1.35.4
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1

die() {
  echo "kube-apiserver.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------- install

# The stamp of a binary: its module's go.mod and go.sum and the build command line.
stamp_of() { # module-dir build-args...
  local mod=$1
  shift
  { cat "$mod/go.mod" "$mod/go.sum"; echo "$*"; } | sha256sum | cut -d' ' -f1
}

API_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
API_LDFLAGS+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35"
API_LDFLAGS+=" -X k8s.io/component-base/version.gitTreeState=clean"
API_PKG=k8s.io/kubernetes/cmd/kube-apiserver
ETCD_LDFLAGS="-s -w"
ETCD_PKG=go.etcd.io/etcd/server/v3

fresh() { # name module-dir ldflags pkg
  [[ -x "$BIN/$1" && -f "$BIN/$1.stamp" ]] &&
    [[ "$(cat "$BIN/$1.stamp")" == "$(stamp_of "$2" "$3" "$4")" ]]
}

build_one() { # name module-dir ldflags pkg
  local name=$1 mod=$2 ldflags=$3 pkg=$4 log="$STATE/build-$1.log" t0=$SECONDS
  echo "kube-apiserver.sh: building $name from $pkg (the first build takes several minutes)" >&2
  if ! (cd "$mod" && nice -n 10 "$GO" build -mod=readonly -trimpath -ldflags "$ldflags" \
    -o "$BIN/$name.tmp.$$" "$pkg") >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$BIN/$name.tmp.$$"
    die "building $name failed (log: $log)"
  fi
  mv -f "$BIN/$name.tmp.$$" "$BIN/$name"
  stamp_of "$mod" "$ldflags" "$pkg" >"$BIN/$name.stamp"
  echo "kube-apiserver.sh: built $BIN/$name in $((SECONDS - t0))s" >&2
}

all_fresh() {
  fresh kube-apiserver "$API_MOD" "$API_LDFLAGS" "$API_PKG" &&
    fresh etcd "$ETCD_MOD" "$ETCD_LDFLAGS" "$ETCD_PKG"
}

cmd_install() {
  all_fresh && return 0
  mkdir -p "$BIN"
  exec 8>"$LOCK"
  flock 8
  fresh kube-apiserver "$API_MOD" "$API_LDFLAGS" "$API_PKG" ||
    build_one kube-apiserver "$API_MOD" "$API_LDFLAGS" "$API_PKG"
  fresh etcd "$ETCD_MOD" "$ETCD_LDFLAGS" "$ETCD_PKG" ||
    build_one etcd "$ETCD_MOD" "$ETCD_LDFLAGS" "$ETCD_PKG"
  flock -u 8
  exec 8>&-
}

# Rewrite (or, with --check, verify) the replace block of tools/k8s/apiserver/go.mod
# from the replace block of the k8s.io/kubernetes release it requires.
cmd_gen_replace() {
  local check=0 kver gomod want staging
  [[ "${1:-}" == --check ]] && check=1
  kver=$(cd "$API_MOD" && "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)
  [[ "$kver" =~ ^v1\.([0-9]+\.[0-9]+)$ ]] || die "unexpected k8s.io/kubernetes version $kver"
  staging="v0.${BASH_REMATCH[1]}"
  gomod=$(cd "$API_MOD" && "$GO" mod download -json "k8s.io/kubernetes@$kver" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')
  want=$(awk -v v="$staging" '
    /^replace \(/ { inside = 1; next }
    inside && /^\)/ { inside = 0 }
    inside && $2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 " => " $1 " " v }' "$gomod" | sort)
  [[ -n "$want" ]] || die "no staging replacements found in $gomod"
  if ((check)); then
    local have
    have=$(cd "$API_MOD" && "$GO" mod edit -json |
      python3 -c 'import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    print(r["Old"]["Path"], "=>", r["New"]["Path"], r["New"].get("Version", ""))' | sort)
    [[ "$have" == "$want" ]] || {
      diff <(echo "$want") <(echo "$have") >&2 || true
      die "tools/k8s/apiserver/go.mod replace block differs from k8s.io/kubernetes@$kver's staging list (< wanted, > present)"
    }
    echo "replace block matches k8s.io/kubernetes@$kver ($(wc -l <<<"$want") modules)"
    return 0
  fi
  # Drop every replace directive (and the comment above ours), then append the block.
  (cd "$API_MOD" && "$GO" mod edit -json |
    python3 -c 'import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    print("-dropreplace=" + r["Old"]["Path"])' | xargs -r "$GO" mod edit)
  python3 - "$API_MOD/go.mod" "$kver" "$staging" "$want" <<'PY'
import re, sys
path, kver, staging, want = sys.argv[1:]
text = open(path).read()
text = re.sub(r"\n// k8s.io/kubernetes requires its staging modules.*?(?=\n[^/]|\Z)", "", text, flags=re.S)
text = text.rstrip("\n") + "\n\n" + (
    "// k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them\n"
    f"// with ./staging/src/...; the published copies of the same release are {staging}.\n"
    f"// Generated from k8s.io/kubernetes {kver}'s go.mod replace block (see\n"
    "// scripts/kube-apiserver.sh gen-replace).\n"
    "replace (\n" + "".join("\t" + line + "\n" for line in want.splitlines()) + ")\n")
open(path, "w").write(text)
PY
  (cd "$API_MOD" && "$GO" mod tidy)
  echo "wrote $(wc -l <<<"$want") replacements for k8s.io/kubernetes@$kver into $API_MOD/go.mod"
}

# ------------------------------------------------------------------------------- PKI

# pick_ports N (shared with scripts/kafka.sh): see scripts/lib.sh.
source "$ROOT/scripts/lib.sh"

newkey() { openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

# sign DIR NAME SUBJECT EXT: a key and a certificate signed by DIR/ca for one year.
sign() {
  local pki=$1 name=$2 subj=$3 ext=$4
  newkey "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

make_pki() {
  local pki=$1/pki tmp="$1/pki.tmp.$$"
  [[ -f "$pki/admin.crt" ]] && return 0
  rm -rf "$tmp" && mkdir -p "$tmp" && chmod 700 "$tmp"
  newkey "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -subj "/CN=visionfleet-test-ca" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.crt" 2>/dev/null
  sign "$tmp" apiserver "/CN=kube-apiserver" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign "$tmp" admin "/O=system:masters/CN=admin" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  newkey "$tmp/sa.key"
  openssl pkey -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
  rm -f "$tmp/ca.srl"
  [[ -s "$tmp/admin.crt" && -s "$tmp/apiserver.crt" && -s "$tmp/sa.pub" ]] || die "openssl failed to make the certificates"
  rm -rf "$pki"
  mv "$tmp" "$pki"
}

write_kubeconfig() { # dir port
  local pki=$1/pki tmp="$1/kubeconfig.tmp.$$"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: visionfleet-test
  cluster:
    server: https://127.0.0.1:$2
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: admin@visionfleet-test
  context:
    cluster: visionfleet-test
    user: admin
current-context: admin@visionfleet-test
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$1/kubeconfig"
}

# ------------------------------------------------------------------------ processes

# PID of server NAME (etcd | kube-apiserver) if it runs and really is that server of DIR.
server_pid() {
  local dir=$1 name=$2 pid
  [[ -f "$dir/pids" ]] || return 0
  pid=$(awk -v n="$name" '$1 == n { print $2 }' "$dir/pids" | tail -n 1)
  [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 0
  if tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1 | grep -q "/$name\$" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"; then
    echo "$pid"
  fi
}

set_pid() { # dir name pid ("" removes the entry)
  local dir=$1 name=$2 pid=$3 tmp="$1/pids.tmp.$$"
  { [[ -f "$dir/pids" ]] && awk -v n="$name" '$1 != n' "$dir/pids"; [[ -n "$pid" ]] && echo "$name $pid"; } \
    >"$tmp" || true
  mv "$tmp" "$dir/pids"
}

stop_servers() { # dir sig timeout names...
  local dir=$1 sig=$2 timeout=$3 name pid deadline
  shift 3
  for name in "$@"; do
    pid=$(server_pid "$dir" "$name")
    if [[ -n "$pid" ]]; then
      kill "-$sig" "$pid" 2>/dev/null || true
      deadline=$((SECONDS + timeout))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "kube-apiserver.sh: $name (pid $pid) did not stop within ${timeout}s, killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      fi
    fi
    set_pid "$dir" "$name" ""
  done
}

fail_start() { # dir message log
  echo "kube-apiserver.sh: $2" >&2
  echo "----- tail of $3 -----" >&2
  tail -n 40 "$3" >&2 || true
  ((${#STARTED[@]} == 0)) || stop_servers "$1" KILL 5 "${STARTED[@]}"
  exit 1
}

start_etcd() { # dir deadline
  local dir=$1 deadline=$2 log="$1/etcd.log" url="http://127.0.0.1:$ETCD_CLIENT_PORT" peer="http://127.0.0.1:$ETCD_PEER_PORT"
  if [[ -z "$(server_pid "$dir" etcd)" ]]; then
    echo "===== $(date -Is) kube-apiserver.sh: starting etcd =====" >>"$log"
    # As envtest: one member, loopback only, no fsync (test data need not survive a crash).
    "$BIN/etcd" --name=visionfleet-test --data-dir="$dir/etcd" \
      --listen-client-urls="$url" --advertise-client-urls="$url" \
      --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
      --initial-cluster="visionfleet-test=$peer" --initial-cluster-state=new \
      --unsafe-no-fsync=true --log-level=warn \
      </dev/null >>"$log" 2>&1 &
    set_pid "$dir" etcd "$!"
    STARTED+=(etcd)
  fi
  until curl -fsS --max-time 2 "$url/health" 2>/dev/null | grep -q '"health":"true"'; do
    [[ -n "$(server_pid "$dir" etcd)" ]] || fail_start "$dir" "etcd exited during start-up" "$log"
    ((SECONDS < deadline)) || fail_start "$dir" "etcd not healthy in time" "$log"
    sleep 0.2
  done
}

start_apiserver() { # dir deadline
  local dir=$1 deadline=$2 log="$1/kube-apiserver.log" pki="$1/pki" server="https://127.0.0.1:$APISERVER_PORT"
  if [[ -z "$(server_pid "$dir" kube-apiserver)" ]]; then
    echo "===== $(date -Is) kube-apiserver.sh: starting kube-apiserver =====" >>"$log"
    # envtest's flags (controller-runtime pkg/internal/testing/controlplane), with our own
    # serving cert and the endpoint reconciler off (Endpoints may not hold 127.0.0.1).
    # ServiceAccount admission is off as in envtest: without a controller-manager no
    # namespace gets its `default` service account, and pods would be refused for that.
    "$BIN/kube-apiserver" \
      --advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
      --client-ca-file="$pki/ca.crt" \
      --authorization-mode=RBAC \
      --service-account-issuer="$server" \
      --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
      --service-cluster-ip-range="$SERVICE_CIDR" \
      --allow-privileged=true \
      --disable-admission-plugins=ServiceAccount \
      --endpoint-reconciler-type=none \
      --profiling=false \
      </dev/null >>"$log" 2>&1 &
    set_pid "$dir" kube-apiserver "$!"
    STARTED+=(kube-apiserver)
  fi
  until [[ "$(curl -sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz" 2>/dev/null)" == ok ]]; do
    [[ -n "$(server_pid "$dir" kube-apiserver)" ]] ||
      fail_start "$dir" "kube-apiserver exited during start-up" "$log"
    ((SECONDS < deadline)) || fail_start "$dir" "kube-apiserver not ready in time" "$log"
    sleep 0.3
  done
}

# A detached watchdog that kills both servers once process PID is gone, so a test run
# that dies (or a test binary whose statics are never dropped) leaves no server behind.
# All its file descriptors are closed, so the caller's pipes see end-of-file.
start_watchdog() { # dir pid cleanup
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
    VF_KUBE_WATCHDOG_PID=$$ "$2" stop --dir "$3" --kill
    [[ -n "$4" ]] && rm -rf "$3"' \
    _ "$2" "$ROOT/scripts/kube-apiserver.sh" "$1" "$3" </dev/null >/dev/null 2>&1 &
  set_pid "$1" watchdog "$!"
}

# An earlier start's watchdog of DIR, if it still runs: a `stop` ends it, so that it can
# not later kill servers that a new start on the same DIR runs for another owner.
stop_watchdog() { # dir
  local pid
  pid=$(awk '$1 == "watchdog" { print $2 }' "$1/pids" 2>/dev/null | tail -n 1)
  if [[ -n "$pid" && "$pid" != "${VF_KUBE_WATCHDOG_PID:-}" && -r /proc/$pid/cmdline ]] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kube-apiserver.sh $1 "; then
    kill "$pid" 2>/dev/null || true
  fi
  set_pid "$1" watchdog ""
}

# ------------------------------------------------------------------------- commands

DIR="" DIR_GIVEN="" TIMEOUT="" KILL_NOW=0 OWNER_PID="" CLEANUP=""
parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$2; shift 2 ;;
      --timeout) TIMEOUT=$2; shift 2 ;;
      --kill) KILL_NOW=1; shift ;;
      --owner-pid | --watch-pid) OWNER_PID=$2; shift 2 ;;
      --cleanup) CLEANUP=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  [[ -n "$DIR" ]] || die "--dir DIR is required"
  DIR_GIVEN=$DIR
  if [[ "$cmd" == start ]]; then
    mkdir -p "$DIR"
  elif [[ ! -d "$DIR" ]]; then
    DIR="" # nothing was ever started there
    return 0
  fi
  DIR=$(cd "$DIR" && pwd)
}

load_ports() {
  [[ -n "$DIR" && -f "$DIR/ports.env" ]] || die "no test bed in $DIR_GIVEN (run: kube-apiserver.sh start --dir $DIR_GIVEN)"
  # shellcheck disable=SC1091
  source "$DIR/ports.env"
}

cmd_start() {
  parse_args "$@"
  [[ -z "$OWNER_PID" ]] || kill -0 "$OWNER_PID" 2>/dev/null || die "--owner-pid $OWNER_PID is not running"
  cmd_install
  local deadline=$((SECONDS + ${TIMEOUT:-120})) ports
  if [[ ! -f "$DIR/ports.env" ]]; then
    read -r -a ports <<<"$(pick_ports 3)"
    printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "${ports[@]}" >"$DIR/ports.env"
  fi
  load_ports
  make_pki "$DIR"
  STARTED=()
  start_etcd "$DIR" "$deadline"
  start_apiserver "$DIR" "$deadline"
  write_kubeconfig "$DIR" "$APISERVER_PORT"
  if [[ -n "$OWNER_PID" ]]; then
    stop_watchdog "$DIR"
    start_watchdog "$DIR" "$OWNER_PID" "$CLEANUP"
  fi
  echo "kubeconfig=$DIR/kubeconfig"
  echo "server=https://127.0.0.1:$APISERVER_PORT"
}

cmd_stop() {
  parse_args "$@"
  [[ -n "$DIR" && -f "$DIR/pids" ]] || return 0 # never started: nothing to do
  local sig=TERM
  ((KILL_NOW)) && sig=KILL
  stop_servers "$DIR" "$sig" "${TIMEOUT:-30}" kube-apiserver etcd
  stop_watchdog "$DIR"
}

cmd_status() {
  parse_args "$@"
  load_ports
  local name pid state
  for name in etcd kube-apiserver; do
    pid=$(server_pid "$DIR" "$name")
    if [[ -n "$pid" ]]; then state="running pid=$pid"; else state=stopped; fi
    if [[ $name == etcd ]]; then
      echo "etcd $state client=$ETCD_CLIENT_PORT"
    else
      echo "kube-apiserver $state port=$APISERVER_PORT"
    fi
  done
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case "$cmd" in
  install) cmd_install ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  gen-replace) cmd_gen_replace "$@" ;;
  -h | --help | help) usage ;;
  *) die "unknown command: $cmd (try --help)" ;;
esac
