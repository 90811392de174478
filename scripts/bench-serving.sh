#!/usr/bin/env bash
# `make bench-serving`: starts a local Kafka broker and one inference pod (CPU,
# coco-yolov5s), runs `visionfleet-loadtest serving` against it, stops both. Ends with the
# line `serving: pod <F> frames/s vs detector <G> frames/s raw (<P>%), overload p99 <A> ms
# vs <B> ms at 70% load, shed <S>%, max rss <R> MB`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE=.state/bench-serving
BIN=${CARGO_TARGET_DIR:-target}/release
SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
BATCH=${BENCH_BATCH:-1}
rm -rf "$STATE" && mkdir -p "$STATE"
# Release binaries: the numbers are what a deployed pod does.
cargo build --release -q -p visionfleet-inference -p visionfleet-loadtest

SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  scripts/kafka.sh stop --dir "$STATE/kafka" >/dev/null 2>&1 || true
}
trap cleanup EXIT

BOOTSTRAP=$(scripts/kafka.sh start --dir "$STATE/kafka" | sed -n 's/^bootstrap=//p')
GRPC=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
# A queue of one batch keeps admitted frames' latency bounded under overload (at most the
# running batch and their own): the excess is shed with RESOURCE_EXHAUSTED instead of
# waiting. Batch 1 by default: on CPU a bigger batch buys throughput with latency
# (BENCH_BATCH=4 shows the other side; see BENCHMARKS.md).
"$BIN/visionfleet-inference" --grpc-addr "$GRPC" --http-addr "$HTTP" \
  --kafka-bootstrap "$BOOTSTRAP" --topic bench.serving --models coco-yolov5s --models-dir models \
  --max-batch-size "$BATCH" --queue-capacity "$BATCH" --max-queue-delay-ms 20 \
  >"$STATE/inference.log" 2>&1 &
SERVER_PID=$!
wait_http "http://$HTTP/readyz" 120 || { tail -n 30 "$STATE/inference.log" >&2; exit 1; }

"$BIN/visionfleet-loadtest" serving --endpoint "http://$GRPC" --pid "$SERVER_PID" \
  --models-dir models --batch "$BATCH" --concurrency $((2 * BATCH)) --seconds "$SECONDS_PER_PHASE"
