#!/usr/bin/env bash
# `make bench-detector`: the candle detector's criterion benchmarks and ONNX Runtime /
# OpenCV on the same work, same machine, same thread count, in one run. Ends with the line
# `detector speed: candle/onnxruntime forward latency ratio at batch 1 = R (candle X ms, onnxruntime Y ms)`.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${BENCH_THREADS:-$(nproc)}
VENV=.state/bench-venv
REQ=tools/bench/requirements.txt
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r "$REQ"
  echo "$want" >"$STAMP"
fi

ONNX=.state/downloads/extracted/fall/fall_detection/models/best_fp16.onnx
[[ -f "$ONNX" ]] || { echo "bench-detector: $ONNX missing (run make models)" >&2; exit 1; }

# BENCH_REPORT_ONLY=1 re-prints the report from the last run's results.
if [[ -z "${BENCH_REPORT_ONLY:-}" ]]; then
  echo "bench-detector: candle (criterion, RAYON_NUM_THREADS=$THREADS)"
  RAYON_NUM_THREADS=$THREADS cargo bench --quiet -p visionfleet-detector --bench detector -- ${BENCH_FILTER:-}

  echo "bench-detector: candle layer by layer (vfctl profile, RAYON_NUM_THREADS=$THREADS)"
  cargo build --quiet --release -p vfctl
  RAYON_NUM_THREADS=$THREADS "${CARGO_TARGET_DIR:-target}/release/vfctl" profile --models-dir models \
    --model fall-yolov8s --batch 1 --runs 5 --json .state/bench-candle-layers.json

  echo "bench-detector: onnxruntime and opencv ($THREADS threads; pre-processing on one core)"
  "$VENV/bin/python" tools/bench/onnxruntime_bench.py --onnx "$ONNX" --image models/samples/bus.jpg \
    --threads "$THREADS" >.state/bench-onnxruntime.json
fi

"$VENV/bin/python" tools/bench/detector_report.py "${CARGO_TARGET_DIR:-target}/criterion" \
  .state/bench-onnxruntime.json .state/bench-candle-layers.json
