#!/usr/bin/env bash
# The main job, end to end on real parts: a local Apache Kafka broker, one inference server
# on CPU with the COCO model, an edge agent streaming the sample photos, and `vfctl tail`
# reading the detection events back from Kafka. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATE=.state/demo
TOPIC=${VF_TOPIC:-visionfleet.detections.v1}
REPEAT=${DEMO_REPEAT:-3}
BIN=${CARGO_TARGET_DIR:-target}/debug
rm -rf "$STATE" && mkdir -p "$STATE"

SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  scripts/kafka.sh stop --dir "$STATE/kafka" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "demo: starting Apache Kafka (KRaft, one broker)"
BOOTSTRAP=$(scripts/kafka.sh start --dir "$STATE/kafka" | sed -n 's/^bootstrap=//p')
GRPC=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)

echo "demo: starting the inference server (coco-yolov5s on CPU) on $GRPC"
"$BIN/visionfleet-inference" --grpc-addr "$GRPC" --http-addr "$HTTP" \
  --kafka-bootstrap "$BOOTSTRAP" --topic "$TOPIC" --models coco-yolov5s --models-dir models \
  >"$STATE/inference.log" 2>&1 &
SERVER_PID=$!
if ! wait_http "http://$HTTP/readyz" 120; then
  echo "demo: the inference server did not become ready; its log:" >&2
  tail -n 30 "$STATE/inference.log" >&2
  exit 1
fi

echo "demo: streaming models/samples ($REPEAT rounds) through the edge agent (store-and-forward spool in $STATE/spool)"
"$BIN/visionfleet-edge-agent" --endpoint "http://$GRPC" --device-id demo-camera-1 \
  --source folder --path models/samples --repeat "$REPEAT" --attribute line=demo,station=1 \
  --spool-dir "$STATE/spool" --json >"$STATE/agent.json" 2>"$STATE/agent.log"
read -r SENT ACKED < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["captured"], s["acknowledged"])' "$STATE/agent.json")

echo "demo: reading the events back from Kafka topic $TOPIC"
"$BIN/vfctl" tail --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --from-beginning \
  --max "$SENT" --idle-timeout 30 --format json >"$STATE/events.jsonl" 2>/dev/null
EVENTS=$(grep -c . "$STATE/events.jsonl" || true)
python3 - "$STATE/events.jsonl" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
for e in events[:3]:
    objects = ", ".join(f'{d["label"]} {d["score"]:.2f}' for d in e["detections"])
    print(f'  {e["event_id"]}: {e["image_width"]}x{e["image_height"]}, '
          f'{len(e["detections"])} detections ({objects})')
if len(events) > 3:
    print(f"  ... {len(events) - 3} more in .state/demo/events.jsonl")
PY
echo "demo: $SENT frames sent, $ACKED acknowledged, $EVENTS detection events read back from Kafka topic $TOPIC"
if [[ "$SENT" -eq 0 || "$ACKED" -ne "$SENT" || "$EVENTS" -ne "$SENT" ]]; then
  exit 1
fi
