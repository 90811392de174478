#!/usr/bin/env bash
# `make bench-agent`: the edge agent's cost on its box. Builds the agent and the harness
# (release), then `visionfleet-loadtest agent` streams 1080p JPEG photos through the real
# agent (disk spool on) at 10 fps and at its maximum rate into an acknowledging sink, and
# measures RSS and CPU from /proc. BENCH_SECONDS sets the measured seconds per phase
# (default 20). Ends with the line
# `agent: rss <M> MB, cpu <C>% of one core at 10 fps, binary <B> MB`.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p visionfleet-edge-agent -p visionfleet-loadtest
"$BIN/visionfleet-loadtest" agent --agent "$BIN/visionfleet-edge-agent" \
  --samples models/samples --work-dir .state/bench-agent --seconds "${BENCH_SECONDS:-20}"
