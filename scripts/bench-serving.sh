#!/usr/bin/env bash
# `make bench-serving`: starts a local Kafka broker and one inference pod (release build,
# CPU, coco-yolov5s), runs `visionfleet-loadtest serving` against it, stops both. Ends with
# the line `serving: pod <F> frames/s vs detector <G> frames/s raw (<P>%), overload p99
# <A> ms vs <B> ms at 70% load, shed <S>%, max rss <R> MB`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE=.state/bench-serving
SECONDS_PER_PHASE=${BENCH_SECONDS:-20}
BATCH=${BENCH_BATCH:-1}
rm -rf "$STATE" && mkdir -p "$STATE"
trap 'stop_bench_stack "$STATE"' EXIT

# A queue of one batch keeps admitted frames' latency bounded under overload (at most the
# running batch and their own): the excess is shed with RESOURCE_EXHAUSTED instead of
# waiting. Batch 1 by default: on CPU a bigger batch buys throughput with latency
# (BENCH_BATCH=4 shows the other side; see BENCHMARKS.md).
start_bench_stack "$STATE" bench.serving \
  --max-batch-size "$BATCH" --queue-capacity "$BATCH" --max-queue-delay-ms 20

"$BIN/visionfleet-loadtest" serving --endpoint "http://$GRPC" --pid "$SERVER_PID" \
  --models-dir models --batch "$BATCH" --concurrency $((2 * BATCH)) --seconds "$SECONDS_PER_PHASE"
