#!/usr/bin/env bash
# `make up` / `make down`: the local stack (one Kafka broker and one inference server) in the
# background, state under .state/stack. Both are idempotent: `up` on a running stack prints
# its addresses again, `down` on a stopped one does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE=.state/stack
TOPIC=${VF_TOPIC:-visionfleet.detections.v1}
BIN=${CARGO_TARGET_DIR:-target}/debug

running() { [[ -f "$STATE/inference.pid" ]] && kill -0 "$(cat "$STATE/inference.pid")" 2>/dev/null; }

print_addresses() {
  # shellcheck disable=SC1091
  source "$STATE/addresses"
  echo "grpc=$GRPC metrics=http://$HTTP/metrics kafka=$BOOTSTRAP topic=$TOPIC"
}

up() {
  mkdir -p "$STATE"
  BOOTSTRAP=$(scripts/kafka.sh start --dir "$STATE/kafka" | sed -n 's/^bootstrap=//p')
  if running; then
    print_addresses
    return
  fi
  GRPC=127.0.0.1:$(free_port)
  HTTP=127.0.0.1:$(free_port)
  printf 'GRPC=%s\nHTTP=%s\nBOOTSTRAP=%s\nTOPIC=%s\n' "$GRPC" "$HTTP" "$BOOTSTRAP" "$TOPIC" >"$STATE/addresses"
  nohup "$BIN/visionfleet-inference" --grpc-addr "$GRPC" --http-addr "$HTTP" \
    --kafka-bootstrap "$BOOTSTRAP" --topic "$TOPIC" --models coco-yolov5s --models-dir models \
    >>"$STATE/inference.log" 2>&1 &
  echo $! >"$STATE/inference.pid"
  if ! wait_http "http://$HTTP/readyz" 120; then
    echo "stack: the inference server did not become ready; see $STATE/inference.log" >&2
    exit 1
  fi
  print_addresses
}

down() {
  if running; then
    local pid
    pid=$(cat "$STATE/inference.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$STATE/inference.pid"
  if [[ -d "$STATE/kafka" ]]; then
    scripts/kafka.sh stop --dir "$STATE/kafka" >/dev/null
  fi
  echo "stack: stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
