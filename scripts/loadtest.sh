#!/usr/bin/env bash
# `make loadtest`: starts a local Kafka broker and one inference pod (release build, CPU,
# coco-yolov5s), runs `visionfleet-loadtest fleet` against it, stops both. Defaults: 100
# devices at 2 fps each for 60 s; any `visionfleet-loadtest fleet` flags can be passed
# through LOADTEST_ARGS (e.g. LOADTEST_ARGS="--devices 1000 --rate 1"). Results land in
# .state/loadtest (results.json, summary.md, timeline.svg). Ends with the line
# `loadtest: <N> sent, <E> events, <L> lost, <D> duplicates, p50 <A> ms, p99 <B> ms, <F> frames/s`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE=.state/loadtest-stack
OUT=${LOADTEST_OUT:-.state/loadtest}
TOPIC=loadtest.detections
rm -rf "$STATE" && mkdir -p "$STATE" "$OUT"
trap 'stop_bench_stack "$STATE"' EXIT

start_bench_stack "$STATE" "$TOPIC" ${POD_ARGS:-}

# shellcheck disable=SC2086
"$BIN/visionfleet-loadtest" fleet --endpoint "http://$GRPC" --kafka-bootstrap "$BOOTSTRAP" \
  --topic "$TOPIC" --pod-pid "$SERVER_PID" --out "$OUT" ${LOADTEST_ARGS:-}
