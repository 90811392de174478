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

# BENCH_REPORT_ONLY=1 re-prints the table from the last run's results.
if [[ -z "${BENCH_REPORT_ONLY:-}" ]]; then
  echo "bench-detector: candle (criterion, RAYON_NUM_THREADS=$THREADS)"
  RAYON_NUM_THREADS=$THREADS cargo bench --quiet -p visionfleet-detector --bench detector -- ${BENCH_FILTER:-}

  echo "bench-detector: onnxruntime and opencv ($THREADS threads; pre-processing on one core)"
  "$VENV/bin/python" tools/bench/onnxruntime_bench.py --onnx "$ONNX" --image models/samples/bus.jpg \
    --threads "$THREADS" >.state/bench-onnxruntime.json
fi

"$VENV/bin/python" - "${CARGO_TARGET_DIR:-target}/criterion" .state/bench-onnxruntime.json <<'PY'
import json, os, sys
crit, ref = sys.argv[1], json.load(open(sys.argv[2]))

def candle_ms(group, bench):
    path = os.path.join(crit, group, bench, "new", "estimates.json")
    return json.load(open(path))["median"]["point_estimate"] / 1e6

rows = []
for b in ("1", "4", "8"):
    c = candle_ms("forward_fall-yolov8s", b)
    o = ref["forward_ms"][b]
    rows.append((f"fall-yolov8s forward, batch {b}", c, o))
for name in ("decode", "letterbox", "decode_and_letterbox"):
    rows.append((f"1080p {name} (one core)", candle_ms("preprocess_1080p", name), ref["preprocess_1080p_ms"][name]))
rows.append(("NMS, 5000 candidates", candle_ms("nms_5000_candidates", ""), ref["nms_5000_ms"]))
for m in ("fall-yolov8s", "coco-yolov5s"):
    for b in ("1", "8"):
        rows.append((f"{m} end to end, batch {b}", candle_ms(f"end_to_end_{m}", b), None))

print(f"| work | candle ms | reference ms (onnxruntime {ref['onnxruntime']} / opencv {ref['opencv']}) | ratio |")
print("|---|---|---|---|")
for label, c, o in rows:
    ratio = f"{c / o:.2f}" if o else "-"
    other = f"{o:.2f}" if o else "-"
    print(f"| {label} | {c:.2f} | {other} | {ratio} |")
c1, o1 = rows[0][1], rows[0][2]
print(f"detector speed: candle/onnxruntime forward latency ratio at batch 1 = {c1 / o1:.2f} "
      f"(candle {c1:.1f} ms, onnxruntime {o1:.1f} ms)")
PY
