# Shared helpers for the demo and stack scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS: polls until the URL answers 200.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until python3 - "$url" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
  do
    if ((SECONDS > deadline)); then
      return 1
    fi
    sleep 0.5
  done
}

# Benchmarks' private stack: start_bench_stack STATE TOPIC [inference flags...] builds the
# release binaries, starts a Kafka broker under STATE/kafka and one inference pod
# (coco-yolov5s) on free loopback ports, and sets BIN, BOOTSTRAP, GRPC, HTTP and
# SERVER_PID. stop_bench_stack STATE stops both; call it from an EXIT trap.
start_bench_stack() {
  local state=$1 topic=$2
  shift 2
  BIN=${CARGO_TARGET_DIR:-target}/release
  cargo build --release -q -p visionfleet-inference -p visionfleet-loadtest
  BOOTSTRAP=$(scripts/kafka.sh start --dir "$state/kafka" | sed -n 's/^bootstrap=//p')
  GRPC=127.0.0.1:$(free_port)
  HTTP=127.0.0.1:$(free_port)
  "$BIN/visionfleet-inference" --grpc-addr "$GRPC" --http-addr "$HTTP" \
    --kafka-bootstrap "$BOOTSTRAP" --topic "$topic" --models coco-yolov5s --models-dir models \
    "$@" >"$state/inference.log" 2>&1 &
  SERVER_PID=$!
  wait_http "http://$HTTP/readyz" 120 || { tail -n 30 "$state/inference.log" >&2; return 1; }
}

stop_bench_stack() {
  if [[ -n "${SERVER_PID:-}" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  scripts/kafka.sh stop --dir "$1/kafka" >/dev/null 2>&1 || true
}

# pick_ports N: prints N distinct TCP ports that are free on 127.0.0.1. They are drawn at random below
# the kernel's ephemeral range, so that outgoing client connections cannot grab a port
# while a server is down (a restart on the same ports relies on getting them back).
pick_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    lo = int(f.read().split()[0])
lo = min(lo, 32768)
chosen = []
for port in random.sample(range(20000, lo), 2000):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    chosen.append(port)
    if len(chosen) == n:
        break
if len(chosen) < n:
    sys.exit("no free ports")
print(" ".join(map(str, chosen)))
EOF
}
